"""Shape study: what a draft step, verification and the layer DP cost on real model shapes.

Random weights (the cost of a layer does not depend on its values), real configs, one device:

    python -m clasp_core.bench.shapes --shapes llama3-8b,deep-80 --device cuda --dtype float16

For each shape it measures, in ms and relative to one full single-token step:
a draft step with M = r * L layers skipped (r = 0.25, 0.45, 0.5, 0.6), verification of K+1
tokens, and one layer-DP run (M = 0.45 L). It then PROJECTS the speedup CLaSp would reach by
combining these measured costs with the acceptance (tau) the paper reports for the nearest
model; the projection is labelled as such and is not a measured speedup.
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
from .common import device_or_exit, md_table, parser, split, sync

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
    out = measure(shape, device, dtype, context, K, reps)
    gc.collect()                 # Runner.fast and StaticSteps.r refer to each other: only gc frees the weights
    if device.type == "cuda":
        out["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    return out


def measure(shape: str, device: torch.device, dtype: torch.dtype, context: int, K: int, reps: int) -> dict:
    model = build(shape, device, dtype)
    runner = Runner(model, capacity=context + K + 64)
    capture_s = runner.prepare(K + 1)              # CUDA graphs (GPU only), outside every timing
    L = runner.num_layers
    prompt = torch.randint(0, model.config.vocab_size, (context,), device=device)
    _, hs = runner.forward(prompt, 0, hidden=True, last_only=True)
    tok = prompt[-1:]
    mid = lambda m: set(range((L - m) // 2, (L - m) // 2 + m))   # which layers is irrelevant to cost

    def step(skip=frozenset()):
        runner.length = context
        runner.forward(tok, context, skip, last_only=True)

    full = timed(step, device, reps)
    draft = {r: timed(lambda r=r: step(mid(round(r * L))), device, reps) for r in RATIOS}
    block = torch.randint(0, model.config.vocab_size, (K + 1,), device=device)

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

    return dict(shape=shape, layers=L, params_b=sum(p.numel() for p in model.parameters()) / 1e9,
                device=str(device), gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                dtype=dtype_name(dtype), context=context, K=K,
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
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    a = ap.parse_args(argv)
    device, dtype = device_or_exit(PROG, a)
    shapes = split(PROG, "shape", a.shapes, SHAPES)
    torch.manual_seed(0)
    results = []
    for s in shapes:
        print(f"shape {s} …", file=sys.stderr, flush=True)
        results.append(study(s, device, dtype, a.context, a.draft_len, a.reps))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(results, f, indent=1)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
