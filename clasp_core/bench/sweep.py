r"""Sweeps: M, K, DET and LOI one at a time around the defaults, or M for each way of choosing layers.

    python -m clasp_core.bench.sweep --per-task 1 \
        --max-new-tokens 64 --out sweep.jsonl
    python -m clasp_core.bench.sweep --per-task 1 \
        --strategies clasp,clasp-once,static,early-exit,random --m-fracs 0.15,0.25,0.35,0.45,0.55

For each prompt, vanilla runs once and every point of the sweep runs on the same prompt (all
greedy, so every run must produce the same tokens: the sweep checks that too). In the strategy
mode the points are (strategy, M = round(F * L)) for each fraction F: tau against M (the paper's
Fig. 4a).
"""
from __future__ import annotations

import sys
from collections import defaultdict
from dataclasses import replace

from ..decoding import GenConfig
from ..metrics import speedup
from ..strategies import STRATEGIES
from .common import fail, fractions, load_or_exit, md_table, num, parser, pick_prompts, read_prompts, split, write_jsonl
from .methods import check, run_one
from .stats import pooled

PROG = "clasp_core.bench.sweep"
PARAMS = {"M": "num_skip", "K": "draft_len", "DET": "det", "LOI": "loi"}


def grid(L: int, base: GenConfig) -> list[tuple[str, str, object, GenConfig]]:
    """(method, parameter, value, config) for each point; the other parameters stay at their defaults."""
    values = {"M": sorted({max(1, round(f * L)) for f in (0.1, 0.2, 0.3, 0.45, 0.6)}), "K": (1, 2, 4, 8),
              "DET": (0.0, 0.3, 0.5, 0.7, 0.9), "LOI": (1, 4, 16, 64)}
    return [("clasp", p, v, replace(base, **{PARAMS[p]: v})) for p, vs in values.items() for v in vs]


def strategy_grid(L: int, base: GenConfig, strategies: list[str], fracs: list[float]):
    """(strategy, "M/L", fraction, config with M = round(fraction * L)) for each pair."""
    return [(s, "M/L", f, replace(base, num_skip=min(L - 1, max(1, round(f * L)))))
            for s in strategies for f in fracs]


def summarize(rows: list[dict]) -> str:
    van = pooled([r for r in rows if r["method"] == "vanilla"])
    groups = defaultdict(list)
    for r in rows:
        if r["method"] != "vanilla":
            groups[(r["method"], r["param"], r["value"])].append(r)
    table = []
    for (m, p, v), rs in groups.items():
        s = pooled(rs)
        table.append([m, p, v, rs[0]["M"], num(s.tau), num(s.accept and 100 * s.accept, ".0f", "%"),
                      num(s.tokens_per_s), num(speedup(s.tokens_per_s, van.tokens_per_s), unit="x"),
                      num(s.dp_share and 100 * s.dp_share, ".1f", "%"),
                      f"{sum(r['same_as_vanilla'] for r in rs)}/{len(rs)}"])
    head = ["method", "parameter", "value", "M", "tau", "accepted/drafted", "tokens/s", "x vanilla", "DP share",
            "same tokens as vanilla"]
    return md_table(head, table) + f"\n\nvanilla: {van.tokens_per_s:.2f} tokens/s"


def main(argv=None) -> int:
    from tqdm.auto import tqdm

    ap = parser(PROG, __doc__)
    ap.add_argument("--prompts", default=None, help="Spec-Bench question file; default: the shipped 24")
    ap.add_argument("--per-task", type=int, default=1)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--strategies", default=None,
                    help=f"comma list of {', '.join(STRATEGIES)}: sweep M for each instead of M, K, DET, LOI")
    ap.add_argument("--m-fracs", default="0.15,0.25,0.35,0.45,0.55", help="M as fractions of L (with --strategies)")
    ap.add_argument("--out", default="sweep.jsonl")
    a = ap.parse_args(argv)
    strategies = split(PROG, "strategy", a.strategies, STRATEGIES) if a.strategies else None
    fracs = fractions(PROG, a.m_fracs)
    try:
        check(strategies or [])
    except ValueError as e:
        raise fail(PROG, str(e)) from None
    prompts = pick_prompts(read_prompts(PROG, a.prompts), a.per_task)
    lm = load_or_exit(PROG, a)
    base = GenConfig(max_new_tokens=a.max_new_tokens)
    L = lm.num_layers
    points = strategy_grid(L, base, strategies, fracs) if strategies else grid(L, base)
    print(f"defaults M={base.resolved(L).num_skip} K={base.draft_len} DET={base.det} LOI={base.loi}; "
          f"{len(points)} points x {len(prompts)} prompts", file=sys.stderr)
    warm = {"question_id": -1, "category": "warmup", "turns": ["Hi."]}
    for m in dict.fromkeys(p[0] for p in points):
        run_one(lm, warm, m, replace(base, max_new_tokens=4))
    rows = []
    with open(a.out, "w") as f, tqdm(total=len(prompts) * (len(points) + 1), desc="sweep", file=sys.stderr) as bar:
        for q in prompts:
            ref = run_one(lm, q, "vanilla", base)
            runs = [(ref, "vanilla", None)]
            bar.update()
            for method, param, value, cfg in points:
                runs.append((run_one(lm, q, method, cfg), param, value))
                bar.update()
            for r, param, value in runs:
                row = dict(r, param=param, value=value, same_as_vanilla=r["token_ids"] == ref["token_ids"])
                rows.append(row)
                write_jsonl(f, row)
    print(summarize(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
