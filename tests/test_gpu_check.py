"""Ready for a GPU without one: the gpu-check harness on a CPU, and the CUDA-path fixes that a CPU can test."""
import json
import os
import subprocess
import sys
import weakref

import pytest
import torch

from clasp_core.bench import shapes
from clasp_core.bench.methods import reserve, run_one
from clasp_core.bench.run import _NoBar, graphs_line, progress_bar
from clasp_core.decoding import GenConfig, generate
from clasp_core.layer_dp import choose_skip_set
from clasp_core.model import from_modules, load_model
from clasp_core.prompt import encode_prompt
from clasp_core.runner import Runner
from tests.conftest import ROOT, bench_prompts, tiny_llama
from tests.test_decoding import PROMPT
from tests.test_fastpath import cpu_graphs, pair

BANNED = ("gradio", "plotly", "pandas")


# ---- fixed-shape DP attention ---------------------------------------------------------------------------
def test_dp_attention_over_the_whole_cache_equals_over_the_used_slots():
    model = tiny_llama(layers=5)
    runner = Runner(model, capacity=48)
    runner.forward(torch.tensor([3, 14, 15, 9, 26, 5]), 0)
    torch.manual_seed(1)
    cands = torch.randn(4, 64)
    for layer in (0, 2, 4):
        outs = []
        for fixed in (False, True):
            runner.dp_fixed = fixed
            outs.append(runner.layer_candidates(layer, cands, 5))
            assert runner.length == 6                               # scratch K/V is not kept either way
        torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    _, hs = runner.forward(torch.tensor([7]), 6, hidden=True, last_only=True)
    choices = []
    for fixed in (False, True):
        runner.dp_fixed = fixed
        choices.append(choose_skip_set(runner, hs[:, -1], 6, 2))
    assert choices[0].skip == choices[1].skip
    nan = lambda D: torch.tensor([[float("nan") if v is None else v for v in row] for row in D])  # noqa: E731
    torch.testing.assert_close(nan(choices[0].D), nan(choices[1].D), rtol=1e-5, atol=1e-5, equal_nan=True)


def test_greedy_clasp_with_fixed_shape_dp_equals_generate():
    model = tiny_llama()
    model.generation_config.eos_token_id = None
    outs = []
    for fixed in (False, True):
        lm = from_modules(model)
        lm.runner = Runner(model, static=True)                     # the CUDA path's math, on a CPU
        lm.runner.dp_fixed = fixed
        outs.append(list(generate(lm, None, GenConfig(num_skip=2, draft_len=5, det=0.0, max_new_tokens=30),
                                  "clasp", prompt_ids=PROMPT))[-1].output_ids)
    ref = model.generate(torch.tensor([PROMPT]), max_new_tokens=30, do_sample=False, eos_token_id=None,
                         pad_token_id=0)[0, len(PROMPT):].tolist()
    assert outs[0] == outs[1] == ref


# ---- a failed capture is loud, counted, and not retried ----------------------------------------------------
def test_a_failed_capture_is_loud_and_leaves_no_graph_seconds(monkeypatch, capsys):
    eager, graphs = pair(tiny_llama())
    cpu_graphs(graphs, monkeypatch, fail=True)
    graphs.forward(torch.tensor([3, 4, 5, 6]), 0)
    with pytest.warns(UserWarning, match="capture failed"):
        assert graphs.prepare(9) == 0.0
    assert "!! CUDA graph capture failed for layer 0, 1 tokens" in capsys.readouterr().err
    assert graphs.graphs == 0 and graphs.capture_s == 0.0 and "layer 0" in graphs.capture_failed
    graphs.allocate(graphs.capacity + 1)                            # a bigger cache: no second try
    assert not graphs.fast.use_graphs and graphs.capture_failed and graphs.prepare(9) == 0.0


def test_graphs_line_says_when_capture_failed():
    rows = [dict(method="hf", graphs=0), dict(method="clasp", graphs=0, graph_failed="layer 3, 1 tokens: boom")]
    assert graphs_line(rows).strip().startswith("!! CUDA graphs: capture FAILED (layer 3")
    assert "180 per-layer graphs" in graphs_line([dict(method="vanilla", graphs=180, graph_failed=None)])


def test_the_bench_runs_without_tqdm(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)             # as on a machine without tqdm
    with progress_bar(3) as bar:
        bar.update()
    assert isinstance(bar, _NoBar)


# ---- the shape study --------------------------------------------------------------------------------------
def test_shape_parameter_counts_come_from_the_config():
    assert round(shapes.param_count("deep-80") / 1e9, 1) == 18.5
    assert round(shapes.param_count("llama3-8b") / 1e9, 2) == 8.03
    model = shapes.build("tiny", torch.device("cpu"), torch.float32)
    assert shapes.param_count("tiny") == sum(p.numel() for p in model.parameters())


def test_shape_study_records_graphs_and_frees_the_model(monkeypatch):
    """The static path (as on CUDA): the study must free the runner, its backend and their buffers, or the
    weights of one shape outlive it while the next is built."""
    alive = []
    build = shapes.build

    def tracked(*a):
        model = build(*a)
        alive.append(weakref.ref(model.model.layers[0]))
        return model
    monkeypatch.setattr(shapes, "build", tracked)
    monkeypatch.setattr(shapes, "Runner", lambda model, capacity: Runner(model, capacity, static=True))
    out = shapes.study("tiny", torch.device("cpu"), torch.float32, context=16, K=3, reps=1)
    assert out["graphs"] == 0 and out["graph_failed"] is None and out["graph_capture_s"] == 0.0
    assert alive and alive[0]() is None
    assert "| graphs |" in shapes.table([out])


# ---- the bench: graph counts in rows, the cache sized once -------------------------------------------------
@pytest.mark.integration
def test_bench_sizes_the_cache_once_and_rows_carry_graphs(tiny_dir):
    lm = load_model(str(tiny_dir), device="cpu", dtype="float32")
    lm.runner = Runner(lm.model, static=True)                       # the CUDA path's bookkeeping
    prompts = [q for q in bench_prompts(1) if len(encode_prompt(lm, q["turns"][0])[0]) < 400][:3]  # tiny: 512
    assert len({len(encode_prompt(lm, q["turns"][0])[0]) for q in prompts}) == 3      # of different lengths
    cfg = GenConfig(num_skip=1, draft_len=3, det=0.0, max_new_tokens=6)
    cap = reserve(lm, prompts, cfg)
    fast = lm.runner.fast
    for q in prompts:
        for m in ("hf", "vanilla", "clasp"):
            row = run_one(lm, q, m, cfg)
            assert row["graphs"] == 0 and row["graph_capture_s"] == 0.0
    assert lm.runner.capacity == cap and lm.runner.fast is fast              # never grown, nothing recaptured


# ---- gpu-check on a CPU, outside the app's dependencies ----------------------------------------------------
SITE = '''
import atexit, json, os, sys
def _record():
    seen = sorted({m.split(".")[0] for m in sys.modules} & {BANNED_NAMES})
    with open(os.path.join(os.environ["IMPORTS_DIR"], str(os.getpid())), "w") as f:
        json.dump([sys.argv, seen], f)
atexit.register(_record)
'''.replace("BANNED_NAMES", ", ".join(repr(b) for b in BANNED))


@pytest.mark.integration
@pytest.mark.heavy
def test_gpu_check_on_a_cpu_passes_without_gradio_or_plotly(tmp_path, tiny_dir):
    """Every step in its own process, each recording which of gradio/plotly/pandas it imported."""
    site, imports, out = tmp_path / "site", tmp_path / "imports", tmp_path / "out"
    site.mkdir()
    imports.mkdir()
    (site / "sitecustomize.py").write_text(SITE)
    env = {**os.environ, "PYTHONPATH": str(site), "IMPORTS_DIR": str(imports)}
    env.pop("CLASP_GPU_MODEL", None)
    proc = subprocess.run([sys.executable, "-m", "clasp_core.bench.gpu_check", "--model", str(tiny_dir),
                           "--out", str(out), "--device", "cpu", "--budget-s", "600"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert [s["name"] for s in summary] == ["versions", "load", "tests", "dp", "replay", "bench-fp16-fused", "probe",
                                            "probe-nocudnn", "shapes", "bench-fp16", "bench-fp16-loi8", "bench-fp32"]
    assert all(s["status"] == "ok" or s["status"].startswith("n/a") for s in summary), summary
    assert "| bench-fp32 | ok |" in (out / "summary.md").read_text() and "## summary" in proc.stdout
    probe = json.loads((out / "probe.json").read_text())
    assert set(probe["dtypes"]) == {"float32", "float16"}
    assert probe["dtypes"]["float32"]["static_vs_ref_argmax_same"] == "10/10"
    assert json.loads((out / "probe-nocudnn.json").read_text())["cudnn_sdpa_preferred"] == "0"
    assert (out / "shapes.json").is_file() and (out / "bench-fp16.jsonl").is_file()
    assert "lossless: " in (out / "bench-fp32.out").read_text()
    records = [json.loads(p.read_text()) for p in imports.iterdir()]
    assert len(records) >= 10                                       # gpu_check itself and its nine steps
    assert all(seen == [] for _, seen in records), [r for r in records if r[1]]


def test_gpu_checks_without_pytest_pass_on_a_cpu():
    """The checks gpu_check runs where pytest is missing (on the GPU machine), here on a CPU."""
    import argparse

    from clasp_core.bench import gpu_check

    checks = gpu_check.step_checks(argparse.Namespace(device="cpu"))
    assert len(checks) == 4 and all(c["ok"] for c in checks.values())


def test_a_hanging_or_failing_step_does_not_stop_the_rest(tmp_path):
    from clasp_core.bench.gpu_check import Step, report, run_all

    steps = [Step("hangs", 2, ["-c", "import time; print('started', flush=True); time.sleep(60)"]),
             Step("fails", 30, ["-c", "import sys; print('a table'); sys.exit('broken')"]),
             Step("works", 30, ["-c", "print('| a | b |')"])]
    run_all(steps, tmp_path, budget_s=600)
    assert [s.status for s in steps] == ["TIMEOUT (2 s)", "FAIL (exit 1)", "ok"]
    assert steps[0].seconds < 30 and (tmp_path / "hangs.out").read_text() == "started\n"
    text = report(steps, tmp_path)
    assert "broken" in text and "| a | b |" in text and text.rstrip().endswith(f"1/3 steps ok; files in {tmp_path}")


def test_the_steps_share_one_budget(tmp_path):
    """Each step gets at most what is left of the budget, and one with less than MIN_STEP_S left is skipped:
    seconds on a clock the steps move (a step of ``cost`` seconds, cut at its limit), not the machine's."""
    from clasp_core.bench.gpu_check import MIN_STEP_S, Step, report, run_all

    now, given = [0.0], {}
    cost = {"quick": 2, "long": 100, "late": 1}

    def run(step, out, limit_s):
        given[step.name] = limit_s
        now[0] += min(cost[step.name], limit_s)
        step.status = "ok" if cost[step.name] <= limit_s else f"TIMEOUT ({limit_s:.0f} s)"

    steps = [Step("quick", 30, []), Step("long", 30, []), Step("late", 30, [])]
    run_all(steps, tmp_path, budget_s=40, clock=lambda: now[0], run=run)
    assert given == {"quick": 30, "long": 30} and 40 - now[0] < MIN_STEP_S
    assert [s.status for s in steps] == ["ok", "TIMEOUT (30 s)", "skipped (budget spent)"]
    steps = [Step("quick", 30, []), Step("long", 30, []), Step("late", 30, [])]
    now[0] = 0.0
    run_all(steps, tmp_path, budget_s=20, clock=lambda: now[0], run=run)           # the budget cuts a limit
    assert given["long"] == 18 and steps[1].status == "TIMEOUT (18 s)" and steps[2].status.startswith("skipped")
    report(steps, tmp_path)
    assert "| late | skipped (budget spent) |" in (tmp_path / "summary.md").read_text()


def test_gpu_check_says_what_is_missing(tmp_path, monkeypatch):
    from clasp_core.bench import gpu_check

    monkeypatch.delenv("CLASP_GPU_MODEL", raising=False)
    with pytest.raises(SystemExit, match="unknown step"):
        gpu_check.main(["--model", "x", "--out", str(tmp_path), "--only", "nope"])
    monkeypatch.setenv("CLASP_GPU_MODEL", "/m/model.gguf")
    assert gpu_check.parse_args(["--out", "d"]).model == "/m/model.gguf"


# ---- ZeroGPU: the module-scope load under the `spaces` package's CUDA emulation ------------------------------
ZERO_GPU_LOAD = '''
import sys
import torch
torch.version.cuda = torch.version.cuda or "12.8"    # a CPU build of torch: let the emulation start
if not hasattr(torch._C, "_cuda_init"):
    torch._C._cuda_init = lambda: None
    torch.cuda._is_in_bad_fork = bool                  # False, and picklable (spaces asks a forked process)
import spaces                                          # first, as on a Space: patches torch.cuda
from clasp_core.model import load_model
lm = load_model(sys.argv[1], device="cuda", dtype="float16")
print("loaded on", next(lm.model.parameters()).device)
'''


@pytest.mark.integration
@pytest.mark.heavy
def test_zero_gpu_module_scope_load_under_the_cuda_emulation(tmp_path, tiny_dir):
    """ZeroGPU emulates CUDA in the main thread only; transformers 5 loads weights in a thread pool,
    which then reaches real CUDA (absent here, as in a Space's main process). load_model keeps the
    load in the calling thread there."""
    pytest.importorskip("spaces")
    script = tmp_path / "zero_gpu_load.py"
    script.write_text(ZERO_GPU_LOAD)
    env = {**os.environ, "SPACES_ZERO_GPU": "true", "SPACES_ZERO_DEVICE_API_URL": "http://127.0.0.1:9/",
           "PYTHONPATH": str(ROOT)}
    env.pop("HF_DEACTIVATE_ASYNC_LOAD", None)
    proc = subprocess.run([sys.executable, str(script), str(tiny_dir)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "loaded on cuda:0" in proc.stdout, proc.stderr[-3000:]


# ---- gpu-check's dp step: the eager DP against the fixed-shape one --------------------------------------------
def test_dp_check_says_when_the_fixed_shape_dp_is_missing(monkeypatch):
    from clasp_core import dp_static
    from clasp_core.bench import dpcheck

    monkeypatch.delattr(dp_static, dpcheck.STATIC, raising=False)
    runner = Runner(tiny_llama(layers=5), static=False)
    res = dpcheck.on_prompt(runner, torch.tensor([3, 14, 15, 9, 26, 5, 35, 8]), reps=2)
    assert res["static"].startswith("not available") and res["L"] == 5 and res["M"] == 2 and res["position"] == 7
    eager = res["eager"]
    assert eager["kernels"] == "n/a" and eager["cpu_ops"] > 0 and eager["gpu_ms"] == eager["wall_ms"] > 0
    assert eager["steps"] == pytest.approx(eager["wall_ms"] / res["full_step_ms"])
    assert runner.length == 8                                        # the DP's scratch is not kept
    assert "| not available (no dp_static.choose_fixed_shape" in dpcheck.table({"tiny": res})


def test_dp_check_compares_d_and_flags_of_a_fixed_shape_dp(monkeypatch):
    """Here the fixed-shape stand-in is the DP with its attention over the whole cache (Runner.dp_fixed, the
    CUDA path's shapes): D and flags must come out equal; a result with one flag turned must not."""
    from clasp_core import dp_static, layer_dp
    from clasp_core.bench import dpcheck

    def whole_cache(runner, xs, p, M):
        runner.dp_fixed = True
        try:
            return choose_skip_set(runner, xs, p, M)
        finally:
            runner.dp_fixed = False

    monkeypatch.setattr(dp_static, dpcheck.STATIC, whole_cache)
    runner = Runner(tiny_llama(layers=6), static=False)
    res = dpcheck.on_prompt(runner, torch.tensor([3, 14, 15, 9, 26, 5, 35, 8]), reps=1, M=3)
    assert res["flags_equal"] and res["skip_equal"] and res["D_cells_equal"] and res["D_max_abs"] < 1e-5
    assert res["static"]["wall_ms"] > 0 and "yes (D max abs" in dpcheck.table({"tiny": res})
    _, hs = runner.forward(torch.tensor([4]), 8, hidden=True, last_only=True)
    a = choose_skip_set(runner, hs[:, -1], 8, 3)
    b = layer_dp.DPResult(a.skip, a.D, a.path, a.seconds, [row[:] for row in a.flags])
    b.flags[6][3] = not b.flags[6][3]
    assert not dpcheck.same(a, b)["flags_equal"] and dpcheck.same(a, a)["flags_equal"]


@pytest.mark.integration
def test_gpu_check_dp_and_replay_steps_on_a_cpu(tmp_path, tiny_dir):
    """The steps that measure the DP and the replayed loop, with JSON and tables; clasp-fused's bench is n/a
    where the engine has no such strategy."""
    from clasp_core.bench.gpu_check import FUSED, has_strategy

    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "clasp_core.bench.gpu_check", "--model", str(tiny_dir),
                           "--out", str(out), "--device", "cpu", "--only", "dp,replay,bench-fp16-fused"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    status = {s["name"]: s["status"] for s in json.loads((out / "summary.json").read_text())}
    fused = "ok" if has_strategy(FUSED) else f"n/a (no {FUSED} strategy in this engine)"
    assert status == {"dp": "ok", "replay": "ok", "bench-fp16-fused": fused}
    dp = json.loads((out / "dp.json").read_text())
    assert dp["static_entry_point"].startswith("clasp_core.dp_static.choose_fixed_shape(")
    model, shape = [v for k, v in dp.items() if k.startswith(("model ", "shape tiny"))]
    assert model["L"] == 3 and shape["L"] == 8 and model["eager"]["wall_ms"] > 0
    assert "| eager |" in (out / "dp.out").read_text()
    runs = json.loads((out / "replay.json").read_text())["runs"]
    assert {(r["tau"], r["loi"]) for r in runs.values() if r["method"] == "clasp"} == {
        (t, loi) for t in shapes.PAPER_TAU["tiny"][1:] for loi in (1, 8)}
    assert "Replayed acceptance" in (out / "replay.out").read_text()
