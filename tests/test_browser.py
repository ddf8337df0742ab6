"""The page in a real browser: Debian's Chromium opens the app, runs an example, and screenshots are saved.

The screenshots go to a temporary folder (CLASP_SCREENSHOTS to choose it); the README's own images
(assets/screenshot*.png) are retaken only when asked: `make screenshots` sets CLASP_README_SHOTS=assets.
"""
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from ui.bench.browser import chromium, set_number, wait_for

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[1]
SHOTS = Path(os.environ.get("CLASP_SCREENSHOTS") or Path(tempfile.gettempdir()) / "clasp-screenshots")
SCREENSHOT = Path(os.environ.get("CLASP_README_SHOTS") or SHOTS) / "screenshot.png"
TIE_TRACE = ROOT / "assets" / "tie-trace.jsonl"


@pytest.fixture(scope="module")
def server(app_url):
    """The test session's one app server (tests/conftest.py), served as `python app.py` serves it."""
    return app_url


@pytest.fixture(scope="module")
def browser():
    try:
        d, profile = chromium()
    except RuntimeError as e:
        pytest.fail(str(e))
    yield d
    d.quit()
    shutil.rmtree(profile, ignore_errors=True)


def click_tab(d, name):
    from selenium.webdriver.common.by import By
    for b in d.find_elements(By.CSS_SELECTOR, "button[role=tab]"):
        if b.text.strip() == name:
            b.click()
            return
    pytest.fail(f"no tab {name!r}")


def painted(d) -> None:
    """Until the browser has laid out and painted what the last step changed (two animation frames)."""
    d.set_script_timeout(30)
    d.execute_async_script("const done = arguments[arguments.length - 1];"
                           "requestAnimationFrame(() => requestAnimationFrame(() => done(true)));")


def overflow(d, el) -> list:
    """How far each plot's SVG inside ``el`` reaches past the panel's right edge (more than 2 px only)."""
    return d.execute_script(
        "const p = arguments[0]; const box = p.getBoundingClientRect();"
        "return [...p.querySelectorAll('.main-svg')].map(s => s.getBoundingClientRect().right - box.right)"
        ".filter(x => x > 2);", el)


def teach_plots(d) -> list:
    """How far each Teach plot's SVG reaches past its own box on the right."""
    return d.execute_script(
        "return [...document.querySelectorAll('#tab-teach .js-plotly-plot')].map(p => {"
        "const b = p.getBoundingClientRect(), s = p.querySelector('.main-svg').getBoundingClientRect();"
        "return s.right - b.right; })")


def test_page_runs_an_example_and_shows_tokens_and_layer_map(server, browser):
    from selenium.webdriver.common.by import By

    d = browser
    d.get(server)
    wait_for(lambda: d.find_element(By.ID, "run-btn").is_displayed(), "the page", 60)
    # pick the translation example, and watch CLaSp draft (auto off, a lower DET, fewer tokens)
    example = next(b for b in d.find_elements(By.CSS_SELECTOR, "button, td, .example")
                   if b.text.strip() == "translation")
    example.click()
    wait_for(lambda: "German" in d.find_element(By.CSS_SELECTOR, "#prompt textarea").get_attribute("value"),
             "the example prompt", 20)
    d.find_element(By.CSS_SELECTOR, "#controls input[type=checkbox]").click()
    set_number(d, "DET", 0.3)
    set_number(d, "max new tokens", 48)
    set_number(d, "LOI", 4)
    d.find_element(By.ID, "run-btn").click()
    try:                      # a condition, not a time: a busy 2-core machine may take minutes
        wait_for(lambda: d.find_element(By.ID, "status").text.startswith("Done."), "the run to finish", 900)
    except TimeoutError:
        pytest.fail(f"the run did not finish; the status says: {d.find_element(By.ID, 'status').text!r}")

    spans = d.find_elements(By.CSS_SELECTOR, "#tokens-clasp .tok")
    assert len(spans) >= 20
    kinds = {s.get_attribute("data-kind") for s in spans}
    assert "accepted" in kinds or "bonus" in kinds
    assert d.find_elements(By.CSS_SELECTOR, "#tokens-vanilla .tok")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    d.execute_script("window.scrollTo(0, 0)")
    wait_for(lambda: d.execute_script("return window.scrollY") == 0, "the page's top", 10)
    painted(d)
    d.save_screenshot(str(SCREENSHOT))

    click_tab(d, "Layers")
    wait_for(lambda: d.find_element(By.CSS_SELECTOR, "#layer-map .js-plotly-plot").is_displayed(), "the layer map", 30)
    assert "Skipped layers per round" in d.find_element(By.ID, "layer-map").text
    d.save_screenshot(str(SCREENSHOT.with_name("screenshot-layers.png")))
    click_tab(d, "Timing")
    wait_for(lambda: "Lossless" in d.find_element(By.ID, "timing").text, "the timing panel", 30)
    d.save_screenshot(str(SCREENSHOT.with_name("screenshot-timing.png")))
    click_tab(d, "Teach")
    explanation = d.find_element(By.ID, "explanation")
    wait_for(lambda: explanation.text.startswith("Round"), "the step-through explanation", 30)
    assert explanation.text.startswith("Round 1 of")          # the step-through opens on the first round
    before = explanation.text
    d.find_element(By.ID, "next-btn").click()
    wait_for(lambda: explanation.text.startswith("Round 2 of"), "the next round", 30)
    assert explanation.text != before
    d.save_screenshot(str(SCREENSHOT.with_name("screenshot-teach.png")))
    # dark mode: Gradio's own switch is the "dark" class; the figures have no background of their own
    d.execute_script("document.body.classList.add('dark')")
    click_tab(d, "Layers")
    wait_for(lambda: d.find_element(By.CSS_SELECTOR, "#layer-map .main-svg").is_displayed(), "the layer map", 30)
    painted(d)
    bg = d.execute_script("return getComputedStyle(document.querySelector('#layer-map .main-svg')).backgroundColor")
    assert bg in ("rgba(0, 0, 0, 0)", "transparent")
    d.save_screenshot(str(SCREENSHOT.with_name("screenshot-dark.png")))
    assert os.path.getsize(SCREENSHOT) > 10_000


WIDTHS = {"desktop": 1280, "wide": 1920, "phone": 390}


def test_replay_sweep_and_layout_at_three_widths(server, browser):
    """A trace loaded with no model: the slow-motion replay plays, the sweep view shows, and the Teach plots
    and the layer map fit their panels at 1280 px, 1920 px and a phone's width (screenshots in SHOTS)."""
    from selenium.webdriver.common.by import By

    d = browser
    SHOTS.mkdir(parents=True, exist_ok=True)
    d.set_window_size(1280, 1000)
    d.get(server)
    wait_for(lambda: d.find_element(By.ID, "run-btn").is_displayed(), "the page", 60)
    next(b for b in d.find_elements(By.CSS_SELECTOR, "button, .label-wrap, span")
         if b.text.strip().startswith("Replay a trace")).click()          # open the accordion
    wait_for(lambda: d.find_elements(By.CSS_SELECTOR, "#trace-upload input[type=file]"), "the upload box", 20)
    d.find_element(By.CSS_SELECTOR, "#trace-upload input[type=file]").send_keys(
        str(ROOT / "assets" / "example-trace.jsonl"))
    wait_for(lambda: d.find_element(By.ID, "status").text.startswith("Replaying"), "the trace", 60)
    click_tab(d, "Teach")
    replay = d.find_element(By.ID, "replay")
    wait_for(lambda: "frame 1 of" in replay.text, "the replay's first frame", 30)
    play = d.find_element(By.ID, "replay-play")
    d.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].click()", play)
    frame = lambda: int(re.search(r"frame (\d+) of", replay.text).group(1))  # noqa: E731
    wait_for(lambda: frame() >= 4, "the replay to play", 90)
    d.execute_script("arguments[0].click()", play)                 # pause
    assert d.find_elements(By.CSS_SELECTOR, "#replay .rp-lit")
    assert "fastest" in d.find_element(By.ID, "sweep").text or d.find_elements(By.CSS_SELECTOR, "#sweep .main-svg")
    for name, width in WIDTHS.items():
        d.set_window_size(width, 1100)
        wait_for(lambda w=width: d.execute_script("return window.innerWidth") <= max(w, 500), "the new width", 10)
        painted(d)
        # on a phone Gradio folds the tabs that do not fit into a menu: the Teach tab is checked there
        targets = (("Teach", "replay"), ("Teach", "sweep")) + ((("Layers", "layer-map"),) if width > 600 else ())
        for tab, target in targets:
            click_tab(d, tab)
            el = d.find_element(By.ID, target)
            d.execute_script("arguments[0].scrollIntoView({block: 'start'})", el)
            # nothing clipped on the right: every plot's SVG fits inside its panel, once Plotly has resized
            try:
                wait_for(lambda el=el: el.is_displayed() and not overflow(d, el), f"{target} to fit at {width} px", 20)
            except TimeoutError:
                pytest.fail(f"{target} overflows its panel by {overflow(d, el)} px at {width} px")
            painted(d)
            d.save_screenshot(str(SHOTS / f"{name}-{target}.png"))
        click_tab(d, "Teach")
        try:
            wait_for(lambda: all(x <= 2 for x in teach_plots(d)), f"the Teach plots to fit at {width} px", 20)
        except TimeoutError:
            pytest.fail(f"a Teach plot is clipped at {width} px: {teach_plots(d)}")
    # the layer map fills its panel's width
    d.set_window_size(1280, 1000)
    click_tab(d, "Layers")
    fill = lambda: d.execute_script("const p = document.getElementById('layer-map');"  # noqa: E731
                                    "const s = p.querySelector('.main-svg');"
                                    "return s.getBoundingClientRect().width / p.getBoundingClientRect().width;")
    try:
        wait_for(lambda: fill() > 0.9, "the layer map to fill its panel", 20)
    except TimeoutError:
        pytest.fail(f"the layer map fills {fill():.2f} of its panel's width")


def replay_trace(d, server: str, trace) -> None:
    """Open the page, upload a recorded trace in "Replay a trace", and wait until it replays."""
    from selenium.webdriver.common.by import By

    d.get(server)
    wait_for(lambda: d.find_element(By.ID, "run-btn").is_displayed(), "the page", 60)
    for b in d.find_elements(By.CSS_SELECTOR, "button, span"):
        if b.text.strip() == "Replay a trace":
            b.click()
            break
    wait_for(lambda: d.find_elements(By.CSS_SELECTOR, "#trace-upload input[type=file]"), "the upload box", 20)
    d.find_element(By.CSS_SELECTOR, "#trace-upload input[type=file]").send_keys(str(trace))
    wait_for(lambda: d.find_element(By.ID, "status").text.startswith("Replaying"), "the replay", 60)


def test_replayed_bfloat16_tie_is_explained_in_the_timing_tab(server, browser):
    """A bfloat16 run where CLaSp parts from vanilla at a rounding tie (assets/tie-trace.jsonl, recorded
    by tests/test_ties.py's prompt): the Timing tab says why, both streams mark the token."""
    from selenium.webdriver.common.by import By

    d = browser
    replay_trace(d, server, TIE_TRACE)
    for stream in ("tokens-clasp", "tokens-vanilla"):
        assert len(d.find_elements(By.CSS_SELECTOR, f"#{stream} .tok-parting")) == 1
    click_tab(d, "Timing")
    wait_for(lambda: "within bfloat16 rounding" in d.find_element(By.ID, "timing").text, "the tie message", 30)
    assert d.find_elements(By.CSS_SELECTOR, "#timing .lossless-tie")
    d.execute_script("document.getElementById('timing').scrollIntoView()")
    painted(d)
    d.save_screenshot(str(SCREENSHOT.with_name("screenshot-tie.png")))


LOOKUP_TRACE = ROOT / "assets" / "lookup-trace.jsonl"


def test_replayed_lookup_token_shows_its_copied_source_on_hover(server, browser):
    """A ``lookup`` run (assets/lookup-trace.jsonl, made by tests/test_lookup.py's LOOKUP_PROMPT): its copied
    tokens are marked, and hovering one shows the span it was copied from, highlighted in its context."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    d = browser
    d.set_window_size(1280, 1000)
    replay_trace(d, server, LOOKUP_TRACE)
    wait_for(lambda: d.find_elements(By.CSS_SELECTOR, "#tokens-clasp .tok-copied[data-kind=accepted]"),
             "the copied tokens", 30)
    token = d.find_elements(By.CSS_SELECTOR, "#tokens-clasp .tok-copied[data-kind=accepted]")[1]
    popup = token.find_element(By.CSS_SELECTOR, ".copy-src")
    assert not popup.is_displayed()                           # hidden until the token is hovered
    d.execute_script("arguments[0].scrollIntoView({block: 'center'})", token)
    ActionChains(d).move_to_element(token).perform()
    wait_for(popup.is_displayed, "the copied span on hover", 10)
    from clasp_core.trace import Prefill, Round, read_trace
    events = read_trace(LOOKUP_TRACE)
    prompt = next(e for e in events if isinstance(e, Prefill)).prompt_text
    copied = [e.lookup["copied_text"].strip() for e in events if isinstance(e, Round) and e.lookup]
    shown = popup.find_element(By.CSS_SELECTOR, "mark.copy-span").text.strip()
    assert shown in copied and shown in prompt              # the highlighted span is the prompt's, as recorded
    assert "prompt lookup" in token.get_attribute("title")
    painted(d)
    d.save_screenshot(str(SCREENSHOT.with_name("screenshot-lookup.png")))


NO_DRAFT_TRACE = ROOT / "assets" / "no-draft-trace.jsonl"
EXAMPLE_TRACE = ROOT / "assets" / "example-trace.jsonl"


def test_the_primer_carries_the_runs_numbers_and_a_never_drafted_run_claims_no_speedup(server, browser):
    """The primer above the tabs, filled in from a drafting run (assets/example-trace.jsonl); then an auto run
    on a CPU that never drafted (assets/no-draft-trace.jsonl): the header says its difference is noise."""
    from selenium.webdriver.common.by import By

    d = browser
    d.get(server)
    wait_for(lambda: "not yet measured" in d.find_element(By.ID, "primer").text, "the primer", 60)
    replay_trace(d, server, EXAMPLE_TRACE)
    wait_for(lambda: "not yet measured" not in d.find_element(By.ID, "primer").text, "the primer's numbers", 60)
    primer = d.find_element(By.ID, "primer").text
    assert "memory-bound" in primer and "τ > k̄ · r" in primer and "This run: speedup" in primer
    d.execute_script("window.scrollTo(0, 0)")
    painted(d)
    d.save_screenshot(str(SCREENSHOT.with_name("screenshot-primer.png")))

    replay_trace(d, server, NO_DRAFT_TRACE)
    said = "no drafting: both sides decoded plainly"
    wait_for(lambda: said in d.find_element(By.ID, "summary").text, "the no-drafting line", 60)
    assert "speedup" not in d.find_element(By.ID, "summary").text
    assert "this run drafted nothing" in d.find_element(By.ID, "primer").text
    d.execute_script("document.getElementById('summary').scrollIntoView({block: 'center'})")
    painted(d)
    d.save_screenshot(str(SCREENSHOT.with_name("screenshot-no-draft.png")))
    click_tab(d, "Timing")
    wait_for(lambda: said in d.find_element(By.ID, "timing").text, "the Timing tab's no-drafting line", 30)
