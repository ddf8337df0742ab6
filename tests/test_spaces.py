"""The app as a Space starts it: `python app.py` with SPACE_ID and Gradio's address variables, `spaces` installed.

No network: the Hub cache that `preload_from_hub` fills on a Space is laid out here from the embedded
model's weights, and HF_HUB_OFFLINE=1 is set.
"""
import os
import signal
import subprocess
import sys
import time

import pytest
from gradio_client.exceptions import AppError

from clasp_core.model import embedded_dir
from clasp_core.presets import SMOLLM2_HUB
from tests.conftest import ROOT, free_port, named, run_args
from tests.test_loading import hub_cache

pytestmark = pytest.mark.integration


def listening_on_all_interfaces(port: int) -> bool:
    """Whether a socket listens on 0.0.0.0:port (Linux /proc/net/tcp: local address, state 0A = LISTEN)."""
    rows = [line.split() for line in open("/proc/net/tcp").read().splitlines()[1:]]
    return any(r[1] == f"00000000:{port:04X}" and r[3] == "0A" for r in rows)


@pytest.mark.heavy
def test_started_as_a_space_it_listens_where_told_and_runs(tmp_path, tiny_dir):
    pytest.importorskip("spaces")                     # Hugging Face's package, as on a Space
    hub_cache(tmp_path, SMOLLM2_HUB, sorted(embedded_dir().iterdir()))
    hub_cache(tmp_path, "org/tiny-llama", sorted(tiny_dir.iterdir()))
    port = free_port()
    env = {**os.environ, "SPACE_ID": "tests/clasp-visualizer", "GRADIO_SERVER_NAME": "0.0.0.0",
           "GRADIO_SERVER_PORT": str(port), "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1",
           "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1", "CLASP_ALLOW_MODELS": "org/*"}
    env.pop("HF_HUB_CACHE", None)
    log = open(tmp_path / "app.log", "w+")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and not listening_on_all_interfaces(port):
            time.sleep(0.5)
        out = (tmp_path / "app.log").read_text()
        assert listening_on_all_interfaces(port), out[-3000:]
        # the model was loaded at module scope, before the server started (as ZeroGPU asks)
        assert out.index(f"Loading {SMOLLM2_HUB} on cpu") < out.index("Running on"), out[-3000:]

        from gradio_client import Client
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)

        def run(model, M=8):
            return client.submit(**run_args("Say hi.", model=model, num_skip=M, loi=1, max_new_tokens=8),
                                 api_name="/run")

        out = named(run("").result(timeout=300))
        assert out["status"].startswith("Done.") and SMOLLM2_HUB in out["status"] and "L = 30" in out["status"]

        # another Hub id through the same field: from the cache (offline), its loading shown in the page
        job = run("org/tiny-llama", M=1)
        out = named(job.result(timeout=300))
        assert out["status"].startswith("Done.") and "org/tiny-llama · L = 3" in out["status"]
        statuses = [named(o)["status"] for o in job.outputs()]
        assert any(str(st).startswith("Loading org/tiny-llama on cpu") for st in statuses), statuses
        with pytest.raises(AppError, match="'org/absent' not found in the local Hugging Face cache.*HF_HUB_OFFLINE"):
            run("org/absent", M=1).result(timeout=300)     # (the M slider now knows L = 3)
        # the host allowed org/* (CLASP_ALLOW_MODELS): anything else is refused, the setting named
        with pytest.raises(AppError, match=r"Model 'other/model' is not offered on this Space: pick one of "
                                           r"HuggingFaceTB/SmolLM2-135M-Instruct, .* The host allows these with "
                                           r"CLASP_ALLOW_MODELS: org/\*\."):
            run("other/model", M=1).result(timeout=300)
    finally:
        proc.send_signal(signal.SIGINT)               # as Ctrl-C: the app exits and removes its files
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_gpu_function_takes_and_yields_plain_data(page):
    """On ZeroGPU `decode` runs in a forked process: its arguments and every snapshot are pickled."""
    import pickle

    from clasp_core.decoding import GenConfig
    from ui.serving.handlers import APP, decode, decode_seconds, gpu_seconds
    from ui.serving.sessions import session_key

    cfg = GenConfig(num_skip=8, draft_len=4, det=0.3, max_new_tokens=8)
    args = ("Say hi.", "", cfg, session_key(None), [])
    assert pickle.loads(pickle.dumps(args)) == args
    APP.sessions.stop_flag(args[3]).clear()     # as run() does before it calls decode (an earlier run set it)
    assert decode_seconds(*args) == gpu_seconds(8, loading=APP.models.loaded("") is None)
    snapshots = list(decode(*args))
    assert snapshots[-1]["status"].startswith("Done.")
    for snap in snapshots:
        assert set(snap) <= set(APP.components)                 # view names, not components
        pickle.dumps(snap)
