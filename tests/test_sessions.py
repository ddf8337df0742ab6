"""Two visitors at once, each a gradio_client session: B's Stop must not touch A's run."""
import time

import pytest
from gradio_client import Client

from clasp_core import trace
from tests.conftest import named, run_args

pytestmark = pytest.mark.integration


def wait_decoding(job, timeout=120):
    def decoding():
        return any(str(named(o)["status"]).startswith("Decoding") for o in job.outputs())
    deadline = time.time() + timeout
    while time.time() < deadline and not decoding():
        time.sleep(0.2)
    assert decoding(), job.outputs()[-1:]


def test_stop_in_one_session_leaves_the_other_run_alone(app_url):
    a, b = Client(app_url, verbose=False), Client(app_url, verbose=False)
    assert a.session_hash != b.session_hash
    job = a.submit(**run_args("Write a short story about a lighthouse keeper.", max_new_tokens=40), api_name="/run")
    wait_decoding(job)
    assert b.predict(api_name="/stop") == "Nothing is running."     # B's Stop: B has no run
    out = named(job.result(timeout=300))
    assert out["status"].startswith("Done."), out["status"]
    done = {e.method: e for e in trace.read_trace(out["download"]) if isinstance(e, trace.Done)}
    assert set(done) == {"clasp", "vanilla"} and all(d.stop_reason != "stopped" for d in done.values())
    assert done["clasp"].output_ids == done["vanilla"].output_ids

    # and A's own Stop still stops A
    job = a.submit(**run_args("Write a long story about a lighthouse keeper.", max_new_tokens=400), api_name="/run")
    wait_decoding(job)
    assert a.predict(api_name="/stop").startswith("Stopping")
    out = named(job.result(timeout=300))
    assert out["status"].startswith("Stopped.")
