r"""Spec-Bench style runs of hf, vanilla and the CLaSp strategies on the same prompts, and the table.

    python -m clasp_core.bench --per-task 4 \
        --max-new-tokens 128 --methods hf,vanilla,clasp --out results.jsonl

``hf`` is transformers ``model.generate`` (the losslessness reference at T=0), ``vanilla`` this
engine without drafting, ``clasp`` this engine with CLaSp, ``auto`` CLaSp with adaptive M/K;
``clasp-once``, ``static``, ``early-exit`` and ``random`` choose the skipped layers otherwise
in the same loop. ``--answer-dir DIR`` also writes Spec-Bench answer files (one per method).
"""
from __future__ import annotations

import sys
from collections import defaultdict

from ..decoding import GenConfig
from ..metrics import speedup
from ..settings import add_flags
from ..ties import Divergence, classify, first_difference
from .common import fail, load_or_exit, md_table, num, parser, pick_prompts, read_prompts, split, write_jsonl
from .methods import METHODS, check, reserve, run_one, warm_up
from .specbench import model_id, write_answers
from .stats import pooled

PROG = "clasp_core.bench"


def verdicts(rows: list[dict], temperature: float) -> dict[tuple, Divergence]:
    """Each engine run against transformers ``generate`` on its question (T=0 only): identical, a
    rounding tie, or an error (ties.py). Where this question's vanilla run agrees with ``generate``
    up to the parting token, vanilla's own top two there must show the same near-tie."""
    hf = {r["question_id"]: r["token_ids"] for r in rows if r["method"] == "hf"}
    if temperature != 0 or not hf:
        return {}
    vanilla = {r["question_id"]: r for r in rows if r["method"] == "vanilla"}
    out = {}
    for r in rows:
        q = r["question_id"]
        if r["method"] == "hf" or q not in hf:
            continue
        tops = list(zip(r.get("top_ids") or [], r.get("top_logits") or []))
        ref_tops = None
        v = vanilla.get(q)
        if v is not None and v is not r and v.get("top_ids"):
            n = len(hf[q])
            if v["token_ids"][:n] == hf[q][:len(v["token_ids"])]:
                ref_tops = list(zip(v["top_ids"], v["top_logits"]))
        tops = [t if t[0] else None for t in tops] or witness_tops(r, hf[q], rows)
        out[(q, r["method"])] = classify(r["token_ids"], tops, hf[q], r.get("dtype", "float32"), ref_tops)
    return out


def witness_tops(row: dict, reference: list[int], rows: list[dict]) -> list:
    """Top-2s for a run that records none (transformers' own prompt lookup): those of another run of
    the same question that emitted the same tokens up to and including the parting one. Its full
    model saw the same context there, so its top two are this run's, up to rounding. Empty if none."""
    k = first_difference(row["token_ids"], reference)
    if k is None:
        return []
    for other in rows:
        if (other is not row and other["question_id"] == row["question_id"] and other.get("top_ids")
                and other["token_ids"][:k + 1] == row["token_ids"][:k + 1] and k < len(other["top_ids"])):
            return [(i, v) if i else None for i, v in zip(other["top_ids"], other["top_logits"])]
    return []


def lossless_cell(ds: list[Divergence]) -> str:
    """'identical X/Y · ties Z · errors N' over some runs."""
    n = {k: sum(d.kind == k for d in ds) for k in ("identical", "tie", "error")}
    return f"identical {n['identical']}/{len(ds)} · ties {n['tie']} · errors {n['error']}"


def summarize(rows: list[dict], temperature: float) -> str:
    """Per task and overall: tokens/s, speedup vs vanilla and hf, tau, acceptance, DP share, and the
    lossless check: identical / tie / error against transformers generate (see ties.py)."""
    by = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by[r["task"]][r["method"]].append(r)
        by["overall"][r["method"]].append(r)
    verdict = verdicts(rows, temperature)
    check_lossless = bool(verdict)
    table = []
    for task in [t for t in by if t != "overall"] + ["overall"]:
        stats = {m: pooled(rs) for m, rs in by[task].items()}
        for m, rs in by[task].items():
            s = stats[m]
            ratio = lambda ref, s=s, stats=stats: (num(speedup(s.tokens_per_s, stats[ref].tokens_per_s), unit="x")
                                                   if ref in stats else "-")
            same = lossless_cell([verdict[(r["question_id"], m)] for r in rs]) \
                if check_lossless and m != "hf" else "-"
            table.append([task, m, s.n, num(s.tokens_per_s), ratio("vanilla"), ratio("hf"), num(s.tau),
                          num(s.accept and 100 * s.accept, ".0f", "%"),
                          num(s.dp_share and 100 * s.dp_share, ".1f", "%"), same])
    lines = [md_table(["task", "method", "n", "tok/s", "x vanilla", "x hf", "tau", "accepted/drafted",
                       "DP share", "lossless"], table)]
    if check_lossless:
        lines.append(f"\nlossless: {lossless_cell(list(verdict.values()))} (engine runs against transformers "
                     f"generate: token-identical, parted at a rounding tie of the full model's top two, or not)")
        for (q, m), d in verdict.items():
            if d.kind != "identical":
                lines.append(f"  {d.kind}: question {q} {m} at token #{d.position} ({d.token} vs {d.reference}): "
                             f"margin {num(d.margin, '.3f')} (vanilla {num(d.reference_margin, '.3f')}), "
                             f"tolerance {num(d.tolerance, '.3g')} in {d.dtype}; {d.reason}")
    return "\n".join(lines)


def parse_args(argv=None):
    ap = parser(PROG, __doc__)
    ap.add_argument("--prompts", default=None,
                    help="Spec-Bench question file (JSON lines); default: the 24 shipped questions (4 per task)")
    add_flags(ap, "max_new_tokens")
    ap.add_argument("--methods", default="hf,vanilla,clasp", help=f"comma list of {', '.join(METHODS)}")
    ap.add_argument("--out", default="results.jsonl")
    ap.add_argument("--answer-dir", default=None, help="also write Spec-Bench answer files here")
    add_flags(ap, "temperature", "top_p", "seed")
    ap.add_argument("--limit", type=int, default=None, help="first N prompts only")
    ap.add_argument("--per-task", type=int, default=None, help="only the first N questions of each task")
    m = ap.add_mutually_exclusive_group()
    add_flags(m, "num_skip")
    m.add_argument("--num-skip-frac", type=float, default=None,
                   help="layers to skip as a fraction F of L: M = round(F*L)")
    add_flags(ap, "draft_len", "det", "loi")
    ap.add_argument("--no-warmup", action="store_true")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    methods = split(PROG, "method", a.methods, METHODS)
    try:
        check(methods)
    except ValueError as e:
        raise fail(PROG, str(e)) from None
    prompts = read_prompts(PROG, a.prompts, a.limit)
    if a.per_task:
        prompts = pick_prompts(prompts, a.per_task)
    lm = load_or_exit(PROG, a)
    M = round(a.num_skip_frac * lm.num_layers) if a.num_skip_frac is not None else a.num_skip
    cfg = GenConfig(num_skip=M, draft_len=a.draft_len, det=a.det, loi=a.loi, temperature=a.temperature,
                    top_p=a.top_p, seed=a.seed, max_new_tokens=a.max_new_tokens)
    try:
        cfg = cfg.resolved(lm.num_layers)
    except ValueError as e:
        raise fail(PROG, str(e)) from None
    print(f"M={cfg.num_skip} K={cfg.draft_len} DET={cfg.det} LOI={cfg.loi} T={cfg.temperature}", file=sys.stderr)
    if set(methods) - {"hf"}:
        reserve(lm, prompts, cfg)          # the cache and graphs once, for the longest prompt
    if not a.no_warmup:
        warm_up(lm, methods, cfg)
    rows = []
    with open(a.out, "w", encoding="utf-8") as f, progress_bar(len(prompts) * len(methods)) as bar:
        for q in prompts:
            for m in methods:  # interleaved, so drift on a noisy machine hits every method alike
                row = run_one(lm, q, m, cfg)
                rows.append(row)
                write_jsonl(f, row)
                bar.set_postfix_str(f"{m} {row['tokens_per_s']:.1f} tok/s")
                bar.update()
    if a.answer_dir:
        for path in write_answers(rows, a.answer_dir, model_id(lm.name)):
            print(f"Spec-Bench answers: {path}", file=sys.stderr)
    verdict = verdicts(rows, a.temperature)
    if verdict:                     # each engine row also records where and why it left generate's tokens
        with open(a.out, "w", encoding="utf-8") as f:
            for row in rows:
                d = verdict.get((row["question_id"], row["method"]))
                write_jsonl(f, {**row, "lossless": d.to_dict()} if d else row)
    print(summarize(rows, a.temperature))
    print(graphs_line(rows))
    errors = [d for d in verdict.values() if d.kind == "error"]
    if errors:
        print(f"{PROG}: {len(errors)} engine run(s) left transformers generate without a rounding tie: "
              f"a bug in the engine", file=sys.stderr)
        return 1
    return 0


def graphs_line(rows: list[dict]) -> str:
    """Whether the engine's runs replayed CUDA graphs: a timing without them is another measurement."""
    engine = [r for r in rows if r["method"] != "hf"]
    failed = next((r["graph_failed"] for r in engine if r.get("graph_failed")), None)
    if failed:
        return f"\n!! CUDA graphs: capture FAILED ({failed}); the engine ran without graphs"
    n = max((r.get("graphs", 0) for r in engine), default=0)
    return f"\nCUDA graphs: {n} per-layer graphs" + (" (none: not on CUDA, or turned off)" if not n else "")


class _NoBar:
    """Stands in for tqdm where it is not installed (a bare GPU machine)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def set_postfix_str(self, s):
        pass

    def update(self, n=1):
        pass


def progress_bar(total: int):
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, desc="bench", file=sys.stderr)
