"""Shape study: what a draft step, verification and the layer DP cost on real model shapes.

Random weights (the cost of a layer does not depend on its values), real configs, one device:

    python -m clasp_core.bench.shapes --shapes llama3-8b,deep-80 --device cuda --dtype float16

For each shape it measures, in ms and relative to one full single-token step:
a draft step with M = r * L layers skipped (r = 0.25, 0.45, 0.5, 0.6), verification of K+1
tokens, and one layer-DP run (M = 0.45 L). It then PROJECTS the speedup CLaSp would reach by
combining these measured costs with the acceptance (tau) the paper reports for the nearest
model; the projection is labelled as such and is not a measured speedup.

With ``--replay-tau T`` (a comma list, or ``paper``: the nearest model's τ range in the paper) it
MEASURES instead: the real CLaSp loop (drafts, verification, the layer DP every LOI rounds,
rollback) on the shape, with acceptance lengths drawn to mean τ (bench/replay.py), against graphed
vanilla on the same Runner; labelled "replayed acceptance":

    python -m clasp_core.bench.shapes --replay-tau paper --shapes llama3-8b,deep-80 --loi 1,8 --device cuda
"""
from __future__ import annotations

import gc
import json
import sys
import time

import torch

from .. import dp_static
from ..costs import PAPER_MODELS, Costs
from ..layer_dp import choose_skip_set
from ..metrics import DEFAULT_SKIP_FRACTION, default_num_skip, dtype_name
from ..runner import Runner
from . import replay
from .common import device_or_exit, fail, md_table, parser, split, sync

PROG = "clasp_core.bench.shapes"

SHAPES = {
    # Llama-3-8B's config
    "llama3-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0),
    # a deeper model that fits one 80 GB card in fp16: Llama-3-8B's width, 80 layers (18.5B parameters,
    # 37 GB in fp16; param_count() computes it from the config)
    "deep-80": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=80, num_attention_heads=32,
                    num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0),
    # SmolLM2-135M's config (the app's default model)
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, rope_theta=100000.0),
    # for checking the script itself on a CPU
    "tiny": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=8, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512, rope_theta=10000.0),
}
# Paper, Table 1 (A800, fp16, Spec-Bench, T=0): tau range per model (costs.PAPER_MODELS, the one copy);
# each shape uses the nearest model's.
_NEAREST = {"llama3-8b": "LLaMA-3-8B", "deep-80": "LLaMA-3-70B", "smollm2-135m": "LLaMA-3-8B", "tiny": "LLaMA-3-8B"}
PAPER_TAU = {shape: (m.name, *m.tau) for shape, name in _NEAREST.items() for m in PAPER_MODELS if m.name == name}
RATIOS = (0.25, DEFAULT_SKIP_FRACTION, 0.5, 0.6)


def config(shape: str):
    from transformers import LlamaConfig

    return LlamaConfig(**SHAPES[shape], max_position_embeddings=8192, tie_word_embeddings=False)


def param_count(shape: str) -> int:
    """The shape's parameter count, from a model built on the meta device (no memory, no weights)."""
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        return sum(p.numel() for p in LlamaForCausalLM(config(shape)).parameters())


def build(shape: str, device: torch.device, dtype: torch.dtype):
    from transformers import LlamaForCausalLM

    cfg = config(shape)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(old)
    return model.eval().requires_grad_(False)


def timed(fn, device: torch.device, reps: int) -> float:
    """Median seconds of fn() over reps runs, after two warm-up runs."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def study(shape: str, device: torch.device, dtype: torch.dtype, context: int, K: int, reps: int) -> dict:
    """One shape's costs; its model and cache are freed before the next shape is built."""
    return freed(measure(shape, device, dtype, context, K, reps), device)


def freed(out: dict, device: torch.device) -> dict:
    """``out`` with the peak GPU memory, after the shape that made it is gone (call it once its model is out
    of scope): the next shape must not be built next to this one's weights."""
    gc.collect()                 # any reference cycle left among the runner's parts: only gc frees the weights
    if device.type == "cuda":
        out["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    return out


def prefilled(shape: str, device: torch.device, dtype: torch.dtype, context: int, K: int, room: int = 64):
    """(runner, prefill's next token, per-layer states of the prompt's last token, graph capture seconds): the
    shape built with random weights, its graphs captured for blocks of up to K + 1 (outside every timing), a
    random prompt of ``context`` tokens in the cache."""
    model = build(shape, device, dtype)
    runner = Runner(model, capacity=context + K + room)
    capture_s = runner.prepare(K + 1)              # CUDA graphs (GPU only), outside every timing
    prompt = torch.randint(0, model.config.vocab_size, (context,), device=device)
    logits, hs = runner.forward(prompt, 0, hidden=True, last_only=True)
    return runner, logits[-1].argmax()[None], hs, capture_s


def measure(shape: str, device: torch.device, dtype: torch.dtype, context: int, K: int, reps: int) -> dict:
    runner, tok, hs, capture_s = prefilled(shape, device, dtype, context, K)
    L = runner.num_layers
    mid = lambda m: set(range((L - m) // 2, (L - m) // 2 + m))   # which layers is irrelevant to cost

    def step(skip=frozenset()):
        runner.length = context
        runner.forward(tok, context, skip, last_only=True)

    full = timed(step, device, reps)
    draft = {r: timed(lambda r=r: step(mid(round(r * L))), device, reps) for r in RATIOS}
    block = torch.randint(0, runner.config.vocab_size, (K + 1,), device=device)

    def verify():
        runner.length = context
        runner.forward(block, context)

    ver = timed(verify, device, reps)
    M = default_num_skip(L)
    xs = hs[:, -1]

    capture_s += dp_static.prepare(runner, M)    # the DP's graph (GPU only), outside every timing

    def dp():
        runner.length = context
        dp_static.choose(runner, xs, context - 1, M)      # the engine's DP: fixed-shape and graphed on CUDA

    def dp_eager():
        runner.length = context
        choose_skip_set(runner, xs, context - 1, M)

    def fused():
        runner.length = context
        dp_static.verify_with_dp(runner, block, context, xs, M)

    dp_s = timed(dp, device, max(3, reps // 4))
    eager_s = dp_s if not dp_static.wanted(runner) else timed(dp_eager, device, max(3, reps // 4))
    fused_s = timed(fused, device, reps)
    name, tau_lo, tau_hi = PAPER_TAU[shape]
    rd = draft[DEFAULT_SKIP_FRACTION] / full
    rv = ver / full
    rdp = dp_s / full

    def project(tau: float, loi: int) -> float:
        """The cost model (clasp_core.costs) with K drafted tokens a round and these measured costs."""
        return Costs(step_s=full, k=K, r_draft=rd, r_verify=rv, dp=rdp, loi=loi, tau=tau).speedup

    return dict(shape=shape, layers=L, params_b=param_count(shape) / 1e9, **where(device, dtype), context=context, K=K,
                full_ms=full * 1e3, draft_ms={str(r): draft[r] * 1e3 for r in RATIOS},
                draft_rel={str(r): draft[r] / full for r in RATIOS}, verify_ms=ver * 1e3, verify_rel=rv,
                dp_ms=dp_s * 1e3, dp_rel=rdp, dp_M=M, dp_fixed_shape=dp_static.wanted(runner),
                dp_eager_ms=eager_s * 1e3, fused_verify_ms=fused_s * 1e3, fused_extra_rel=(fused_s - ver) / full,
                graph_capture_s=capture_s,
                graphs=runner.graphs, graph_failed=runner.capture_failed,
                projection=dict(note=f"PROJECTION from measured costs and {name}'s tau range in the paper "
                                     f"(Table 1, T=0), M=0.45L, K={K} drafted per round; not a measured speedup",
                                tau=[tau_lo, tau_hi],
                                speedup_loi1=[project(tau_lo, 1), project(tau_hi, 1)],
                                speedup_loi32=[project(tau_lo, 32), project(tau_hi, 32)]))


def where(device: torch.device, dtype: torch.dtype) -> dict:
    return dict(device=str(device), gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                dtype=dtype_name(dtype))


# ---- replayed acceptance: the real loop measured at a given tau ------------------------------------------
def replay_taus(shape: str, text: str) -> list[tuple[float, str]]:
    """(tau, where it comes from) for ``--replay-tau``: a comma list of numbers, or ``paper`` (the nearest
    model's T=0 tau range in the paper's Table 1, both ends)."""
    if text.strip() == "paper":
        name, lo, hi = PAPER_TAU[shape]
        return [(lo, f"paper {name} low"), (hi, f"paper {name} high")]
    try:
        return [(float(t), "given") for t in text.split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"--replay-tau takes a comma list of numbers or 'paper', got {text!r}") from None


def study_replay(shape: str, device: torch.device, dtype: torch.dtype, a, methods: list[str], lois: list[int],
                 on_row=None) -> list[dict]:
    """Graphed vanilla, then every (tau, LOI, method) on one shape, each the median of ``a.reps`` decodes of
    ``a.new_tokens`` tokens after one warm-up; ``on_row(row)`` sees each row as it is measured."""
    taus = replay_taus(shape, a.replay_tau)
    L = SHAPES[shape]["num_hidden_layers"]
    M, K, n = default_num_skip(L), a.draft_len, a.new_tokens
    runner, tok, hs, capture_s = prefilled(shape, device, dtype, a.context, K, room=n + M + 64)
    cur, pos, xs0 = int(tok), a.context, hs[:, -1]
    base = dict(label=replay.LABEL, shape=shape, layers=L, **where(device, dtype), context=a.context, K=K, M=M,
                draft_stop=a.draft_stop, graphs=runner.graphs, graph_failed=runner.capture_failed,
                graph_capture_s=capture_s)

    def fresh():
        runner.rollback(pos)          # every decode starts from the same prefill
        return runner

    rows = []
    vanilla = replay.summary(replay.median_run(lambda: replay.decode_vanilla(fresh(), cur, pos, n), a.reps))
    step_s = vanilla["seconds"] / n
    rows.append(dict(base, method="vanilla", **vanilla))
    if on_row:
        on_row(rows[-1])
    for tau, source in taus:
        for loi in lois:
            for m in methods:
                decode = replay.DECODES[m]

                def once(tau=tau, loi=loi, decode=decode):
                    acc = replay.Acceptance(tau, K, a.seed)          # the same draws in every repeat
                    return decode(fresh(), acc, cur, pos, xs0, M, K, loi, n, a.draft_stop)

                got = replay.summary(replay.median_run(once, a.reps), step_s)
                rows.append(dict(base, method=m, tau=tau, tau_source=source, alpha=replay.alpha_for(tau, K), loi=loi,
                                 vanilla_tokens_per_s=vanilla["tokens_per_s"],
                                 speedup=got["tokens_per_s"] / vanilla["tokens_per_s"], **got))
                if on_row:
                    on_row(rows[-1])
    return rows


def replay_table(rows: list[dict]) -> str:
    head = ["shape", "device", "method", "tau asked (source)", "tau replayed", "LOI", "tok/s", "x vanilla",
            "DP share", "DP ms (steps)", "rounds"]
    out = []
    for r in rows:
        common = [f"{r['shape']} (L={r['layers']}, M={r['M']}, K={r['K']})", f"{r['gpu']} {r['dtype']}"]
        if r["method"] == "vanilla":
            out.append(common + ["vanilla (graphed)" if r["graphs"] else "vanilla", "-", "-", "-",
                                 f"{r['tokens_per_s']:.1f}", "1.00x", "-", "-", r["rounds"]])
            continue
        dp = "-" if r["dp_ms"] is None else f"{r['dp_ms']:.2f}" + (
            f" ({r['dp_steps']:.2f})" if r["dp_steps"] is not None else "")
        out.append(common + [r["method"], f"{r['tau']:.2f} ({r['tau_source']})", f"{r['tau_replayed']:.2f}",
                             r["loi"], f"{r['tokens_per_s']:.1f}", f"{r['speedup']:.2f}x", f"{r['dp_share']:.1%}",
                             dp, r["rounds"]])
    stop = {"oracle": "drafting stops right after the first rejected draft (a perfect DET)",
            "full": "K drafts every round (no DET)"}[rows[0]["draft_stop"]] if rows else ""
    return (f"**{replay.LABEL.capitalize()}**: measured tokens/s of the real loop (drafts, verification, the layer "
            f"DP every LOI rounds, rollback) on random weights, with accepted lengths DRAWN to mean tau (prefix rule, "
            f"seeded), not read from a model; {stop}. DP steps: one DP in vanilla steps.\n\n"
            + md_table(head, out))


def table(results: list[dict]) -> str:
    head = ["shape", "L", "device", "graphs", "full step ms", "draft/full @ M/L=0.25, 0.45, 0.5, 0.6",
            "verify K+1 / full", "DP ms (/full)", "eager DP ms", "fused DP: added / full",
            "projected speedup LOI=1", "LOI=32"]
    rows = []
    for r in results:
        p = r["projection"]
        rows.append([f"{r['shape']} ({r['params_b']:.2f}B)", r["layers"], f"{r['gpu']} {r['dtype']}",
                     "FAILED" if r.get("graph_failed") else r.get("graphs", 0), f"{r['full_ms']:.2f}",
                     ", ".join(f"{r['draft_rel'][str(x)]:.2f}" for x in RATIOS),
                     f"{r['verify_rel']:.2f}", f"{r['dp_ms']:.1f} ({r['dp_rel']:.1f})", f"{r['dp_eager_ms']:.1f}",
                     f"{r['fused_extra_rel']:.2f}",
                     f"{p['speedup_loi1'][0]:.2f}–{p['speedup_loi1'][1]:.2f}x",
                     f"{p['speedup_loi32'][0]:.2f}–{p['speedup_loi32'][1]:.2f}x"])
    return md_table(head, rows) + ("\n\nProjected speedups combine the measured costs with the paper's tau range; "
                                   "they are not measured. DP: the engine's (fixed-shape, one CUDA graph on a GPU); "
                                   "eager DP: the reference, one packed call per layer; fused DP: a verification of "
                                   "K+1 tokens with the DP riding it, less the verification alone.")


def main(argv=None) -> int:
    ap = parser(PROG, __doc__, model=False)
    ap.add_argument("--shapes", default="llama3-8b,deep-80", help=f"comma list of {', '.join(SHAPES)}")
    ap.add_argument("--context", type=int, default=512, help="tokens already in the cache")
    ap.add_argument("-K", "--draft-len", type=int, default=8)
    ap.add_argument("--reps", type=int, default=None,
                    help="timed repeats, median kept (default 20; with --replay-tau, decodes: 3)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--replay-tau", default=None, metavar="T",
                    help="measure the real loop with acceptance drawn to mean T (comma list, or 'paper')")
    ap.add_argument("--loi", default="1,8", help="replay: comma list of layer-optimisation intervals (rounds)")
    ap.add_argument("--methods", default="clasp",
                    help=f"replay: comma list of layer choices, or 'all' (here: {', '.join(replay.available())})")
    ap.add_argument("--new-tokens", type=int, default=128, help="replay: tokens per decode")
    ap.add_argument("--draft-stop", default="oracle", choices=replay.DRAFT_STOPS,
                    help="replay: 'oracle' stops drafting after the first rejected draft; 'full' drafts K every round")
    ap.add_argument("--seed", type=int, default=0, help="replay: seed of the drawn acceptance")
    a = ap.parse_args(argv)
    device, dtype = device_or_exit(PROG, a)
    shapes = split(PROG, "shape", a.shapes, SHAPES)
    torch.manual_seed(0)
    if a.replay_tau is not None:
        a.reps = 3 if a.reps is None else a.reps
        return main_replay(a, shapes, device, dtype)
    a.reps = 20 if a.reps is None else a.reps
    results = []
    for s in shapes:
        print(f"shape {s} …", file=sys.stderr, flush=True)
        results.append(study(s, device, dtype, a.context, a.draft_len, a.reps))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(results, f, indent=1)
    print(table(results))
    return 0


def main_replay(a, shapes: list[str], device: torch.device, dtype: torch.dtype) -> int:
    """--replay-tau: the table of measured speeds with replayed acceptance; the JSON rewritten after each row."""
    try:
        methods = replay.methods(a.methods)
        lois = [int(x) for x in a.loi.split(",") if x.strip()]
        for s in shapes:
            for tau, _ in replay_taus(s, a.replay_tau):
                replay.alpha_for(tau, a.draft_len)
    except ValueError as e:
        raise fail(PROG, str(e)) from None
    if not lois or min(lois) < 1 or a.new_tokens < 2 or a.reps < 1:
        raise fail(PROG, "--loi needs whole numbers >= 1, --new-tokens at least 2 and --reps at least 1")
    rows: list[dict] = []

    def write() -> None:
        if a.out:
            with open(a.out, "w") as f:
                json.dump(dict(label=replay.LABEL, runs={run_key(r): r for r in rows}), f, indent=1)

    def keep(row: dict) -> None:
        rows.append(row)
        print(f"  {row['shape']} {row['method']} tau={row.get('tau', '-')} loi={row.get('loi', '-')}: "
              f"{row['tokens_per_s']:.1f} tok/s", file=sys.stderr, flush=True)
        write()

    for s in shapes:
        print(f"shape {s}, {replay.LABEL} …", file=sys.stderr, flush=True)
        done = study_replay(s, device, dtype, a, methods, lois, on_row=keep)
        peak = freed({}, device).get("peak_gib")
        if peak is not None:
            for r in done:
                r["peak_gib"] = peak
            write()
    print(replay_table(rows))
    return 0


def run_key(r: dict) -> str:
    """A row's name in the JSON (a timed-out run's partial file reads as one line per number)."""
    return " ".join([r["shape"], r["method"]] + ([f"tau={r['tau']:g}", f"loi={r['loi']}"] if "tau" in r else []))


if __name__ == "__main__":
    sys.exit(main())
