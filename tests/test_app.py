"""The app end to end: launched on a local port, driven through gradio_client on the embedded model."""
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from clasp_core import trace
from tests.conftest import named, run_args

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False)


def run(client, prompt, **settings):
    return named(client.predict(**run_args(prompt, **settings), api_name="/run"))


def test_run_streams_every_view_and_a_trace(client):
    out = run(client, "Name three colours.")
    m_value, status = out["num_skip"], out["status"]
    assert m_value["maximum"] == 29 and "L = 30" in m_value["label"]     # the M slider follows the model's depth
    assert status.startswith("Done.") and "L = 30" in status
    assert 'class="tok ' in out["tokens"] and 'class="tok ' in out["tokens_vanilla"]
    assert "lossless-ok" in out["timing"] and "speedup" in out["timing"]
    assert out["rounds"]["headers"][:3] == ["round", "kind", "drafted"] and len(out["rounds"]["data"]) >= 1
    assert out["explanation"].startswith("**Round 1 of")                # Teach opens on the first round
    events = trace.read_trace(out["download"])
    done = {e.method: e for e in events if isinstance(e, trace.Done)}
    assert set(done) == {"clasp", "vanilla"} and done["clasp"].output_ids == done["vanilla"].output_ids
    assert done["clasp"].new_tokens <= 16
    assert any(isinstance(e, trace.LayerChoice) and len(e.skip) == 8 for e in events)


def test_bad_input_shows_an_error_and_the_next_run_works(client):
    with pytest.raises(AppError, match="empty"):
        run(client, "   ")
    # the engine says so, or the slider once it knows L
    with pytest.raises(AppError, match="must be between 0 and 29|greater than maximum value 29"):
        run(client, "Hello", num_skip=30)
    with pytest.raises(AppError, match="greater than maximum"):   # the slider's own bound check
        run(client, "Hello", det=1.5)
    with pytest.raises(AppError, match="not found"):
        run(client, "Hi", model="/no/such/model", max_new_tokens=8)
    assert run(client, "Say hi.", max_new_tokens=8)["status"].startswith("Done.")


def test_auto_run_and_trace_replay(client):
    from ui.page import REPLAY_OUTPUTS

    out = run(client, "What is 2 + 2?", auto=True, max_new_tokens=12)
    assert out["status"].startswith("Done.") and "lossless-ok" in out["timing"]
    assert "auto" in out["status"]                                  # what auto did with the knobs is said
    replay = named(client.predict(handle_file(out["download"]), api_name="/replay"), REPLAY_OUTPUTS)
    assert replay["status"].startswith("Replaying") and replay["tokens"] == out["tokens"]
    assert replay["download"] and trace.read_trace(replay["download"])      # the replayed trace stays downloadable


def test_stop_button_ends_the_run_early(client):
    import time

    job = client.submit(**run_args("Write a long story about a lighthouse keeper.", max_new_tokens=400),
                        api_name="/run")
    deadline = time.time() + 60
    while time.time() < deadline and not any("Decoding" in str(named(o)["status"]) for o in job.outputs()):
        time.sleep(0.2)
    client.predict(api_name="/stop")
    out = named(job.result(timeout=120))
    assert out["status"].startswith("Stopped.")
    done = [e for e in trace.read_trace(out["download"]) if isinstance(e, trace.Done)]
    assert [d.method for d in done] == ["clasp"] and done[0].stop_reason == "stopped"
    assert done[0].new_tokens < 400
    assert run(client, "Say hi.", max_new_tokens=8)["status"].startswith("Done.")        # and the next run works


def test_layer_choices_are_compared_on_the_same_prompt(client):
    prompt = "Name two fruits."
    first = run(client, prompt, max_new_tokens=12)
    second = run(client, prompt, max_new_tokens=12, strategy="early-exit")
    assert second["status"].startswith("Done.") and "lossless-ok" in second["timing"]
    table = second["compare_table"]
    rows = [dict(zip(table["headers"], r)) for r in table["data"]]
    assert [r["strategy"] for r in rows][-2:] == ["clasp", "early-exit"]
    assert all(r["M"] == 8 and r["τ"] >= 1 for r in rows)
    assert "predicted speedup" in first["costs"] and "measured speedup" in first["costs"]


def test_cjk_and_emoji_reach_the_page_whole(client, embedded):
    out = run(client, "Repeat exactly: 北京欢迎你 🙂 café", max_new_tokens=24)
    assert out["status"].startswith("Done.")
    assert "\ufffd" not in out["tokens"] and "\ufffd" not in out["tokens_vanilla"]
    events = trace.read_trace(out["download"])
    for run_events in trace.split_runs(events):
        # the emitted pieces join to the decoded output; drafts past the first rejection were never looked
        # at, and one whose bytes are not UTF-8 at all honestly decodes to U+FFFD, so they are not checked
        pieces = [run_events[0].first_text]
        for e in run_events:
            if isinstance(e, trace.Step):
                pieces.append(e.text)
            elif isinstance(e, trace.Round):
                n = len(e.emitted)
                pieces += e.drafted_text[:min(n, e.accepted)] + ([e.next_text] if n > e.accepted else [])
        done = run_events[-1]
        decoded = embedded.tokenizer.decode(done.output_ids, skip_special_tokens=False,
                                            clean_up_tokenization_spaces=False)
        assert "".join(pieces) + done.tail_text == decoded and "\ufffd" not in decoded

