"""Spec-Bench style runs of hf / vanilla / clasp on the same prompts, and the summary table.

    python -m clasp_core.bench --prompts ../shared/bench/specbench-dev.jsonl \
        --max-new-tokens 128 --methods hf,vanilla,clasp --out results.jsonl

``hf`` is transformers ``model.generate`` (the losslessness reference at T=0), ``vanilla`` this
engine without drafting, ``clasp`` this engine with CLaSp, ``auto`` CLaSp with adaptive M/K.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

from .decoding import GenConfig, encode_prompt, generate
from .model import LoadedModel, load_model

MT_BENCH = {"writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities"}
ENGINE_METHODS = {"vanilla": ("vanilla", False), "clasp": ("clasp", False), "auto": ("clasp", True)}
ALL_METHODS = ("hf", *ENGINE_METHODS)


def task_of(category: str) -> str:
    return "mt_bench" if category in MT_BENCH else category


def read_prompts(path: str, limit: int | None = None) -> list[dict]:
    p = Path(path)
    if not p.is_file():
        raise SystemExit(f"bench: prompts file not found: {path}")
    rows = [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows[:limit] if limit else rows


def run_hf(lm: LoadedModel, ids: list[int], cfg: GenConfig) -> tuple[list[int], float]:
    x = torch.tensor([ids], device=lm.model.device)
    kw = dict(do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p, top_k=None) \
        if cfg.temperature > 0 else dict(do_sample=False, temperature=None, top_p=None, top_k=None)
    if cfg.temperature > 0:
        torch.manual_seed(cfg.seed)
    sync(lm)
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = lm.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=cfg.max_new_tokens,
                                pad_token_id=lm.tokenizer.pad_token_id or lm.eos_ids[0], **kw)
    sync(lm)
    return out[0, len(ids):].tolist(), time.perf_counter() - t0


def sync(lm: LoadedModel) -> None:
    if lm.device.startswith("cuda"):
        torch.cuda.synchronize()


def run_engine(lm: LoadedModel, ids: list[int], cfg: GenConfig, method: str) -> dict:
    kind, auto = ENGINE_METHODS[method]
    events = list(generate(lm, None, GenConfig(**{**cfg.__dict__, "auto": auto}), kind, prompt_ids=ids))
    done = events[-1]
    row = dict(new_tokens=done.new_tokens, wall_s=done.wall_s, tokens_per_s=done.tokens_per_s,
               token_ids=done.output_ids, text=done.text)
    if kind == "clasp":
        row.update(rounds=done.rounds, drafted=done.drafted, accepted=done.accepted, tau=done.tau,
                   dp_s=done.dp_s, draft_s=done.draft_s, verify_s=done.verify_s)
    return row


def run_one(lm: LoadedModel, q: dict, method: str, cfg: GenConfig) -> dict:
    ids, _ = encode_prompt(lm, q["turns"][0])
    if method == "hf":
        out, wall = run_hf(lm, ids, cfg)
        row = dict(new_tokens=len(out), wall_s=wall, tokens_per_s=len(out) / wall, token_ids=out,
                   text=lm.tokenizer.decode(out, skip_special_tokens=True))
    else:
        row = run_engine(lm, ids, cfg, method)
    return dict(question_id=q["question_id"], category=q["category"], method=method, **row)


def warm_up(lm: LoadedModel, methods: list[str], cfg: GenConfig) -> None:
    q = {"question_id": -1, "category": "warmup", "turns": ["Say hello."]}
    short = GenConfig(**{**cfg.__dict__, "max_new_tokens": 8})
    for m in methods:
        run_one(lm, q, m, short)


def summarize(rows: list[dict], temperature: float) -> str:
    """Per task and overall: tokens/s, speedup vs vanilla and hf, tau, lossless X/Y."""
    by = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by[task_of(r["category"])][r["method"]].append(r)
        by["overall"][r["method"]].append(r)
    ref = {(r["question_id"], r["method"]): r["token_ids"] for r in rows}
    methods = list(dict.fromkeys(r["method"] for r in rows))
    head = f"{'task':<15} {'method':<8} {'n':>3} {'tok/s':>7} {'x vanilla':>9} {'x hf':>6} {'tau':>5} {'dp %':>5} lossless"
    lines = [head, "-" * len(head)]
    tasks = [t for t in by if t != "overall"] + ["overall"]
    for task in tasks:
        rate = {m: tok_rate(by[task][m]) for m in methods if by[task][m]}
        for m in methods:
            rs = by[task][m]
            if not rs:
                continue
            x_van = f"{rate[m] / rate['vanilla']:.2f}x" if "vanilla" in rate else "-"
            x_hf = f"{rate[m] / rate['hf']:.2f}x" if "hf" in rate else "-"
            tau = "-"
            dp = "-"
            if "tau" in rs[0]:
                rounds = sum(r["rounds"] for r in rs)
                tau = f"{sum(r['new_tokens'] - 1 for r in rs) / rounds:.2f}" if rounds else "-"
                dp = f"{100 * sum(r['dp_s'] for r in rs) / sum(r['wall_s'] for r in rs):.1f}"
            lossless = "-"
            if m != "hf" and temperature == 0 and "hf" in methods:
                same = sum(ref.get((r["question_id"], "hf")) == r["token_ids"] for r in rs)
                lossless = f"{same}/{len(rs)}"
            lines.append(f"{task:<15} {m:<8} {len(rs):>3} {rate[m]:>7.2f} {x_van:>9} {x_hf:>6} {tau:>5} {dp:>5} {lossless}")
        lines.append("")
    total = [r for r in rows if r["method"] != "hf"]
    if temperature == 0 and "hf" in methods and total:
        same = sum(ref.get((r["question_id"], "hf")) == r["token_ids"] for r in total)
        lines.append(f"lossless: {same}/{len(total)} (engine runs token-identical to transformers generate)")
    return "\n".join(lines)


def tok_rate(rs: list[dict]) -> float:
    wall = sum(r["wall_s"] for r in rs)
    return sum(r["new_tokens"] for r in rs) / wall if wall else 0.0


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m clasp_core.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", required=True, help="Spec-Bench question file (JSON lines)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--methods", default="hf,vanilla,clasp", help=f"comma list of {', '.join(ALL_METHODS)}")
    ap.add_argument("--out", default="results.jsonl")
    ap.add_argument("--model", default=None, help="local dir, HF-cache id or .gguf (default: embedded SmolLM2)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"])
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=None, help="first N prompts only")
    ap.add_argument("--num-skip", "-M", type=int, default=None, help="layers to skip (default ~45%% of L)")
    ap.add_argument("--draft-len", "-K", type=int, default=8)
    ap.add_argument("--det", type=float, default=0.7)
    ap.add_argument("--loi", type=int, default=1)
    ap.add_argument("--no-warmup", action="store_true")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    from tqdm.auto import tqdm

    a = parse_args(argv)
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in ALL_METHODS]
    if bad:
        raise SystemExit(f"bench: unknown method(s) {bad}; choose from {', '.join(ALL_METHODS)}")
    cfg = GenConfig(num_skip=a.num_skip, draft_len=a.draft_len, det=a.det, loi=a.loi,
                    temperature=a.temperature, top_p=a.top_p, seed=a.seed, max_new_tokens=a.max_new_tokens)
    prompts = read_prompts(a.prompts, a.limit)
    try:
        lm = load_model(a.model, a.device, a.dtype)
        cfg.resolved(lm.num_layers)
    except ValueError as e:
        raise SystemExit(f"bench: {e}") from None
    print(f"model: {lm.name} | L={lm.num_layers} | {lm.device} {lm.dtype} | torch threads {torch.get_num_threads()}"
          f" | M={cfg.resolved(lm.num_layers).num_skip} K={cfg.draft_len} DET={cfg.det} LOI={cfg.loi}"
          f" T={cfg.temperature}", file=sys.stderr)
    if not a.no_warmup:
        warm_up(lm, methods, cfg)
    rows = []
    with open(a.out, "w", encoding="utf-8") as f, tqdm(total=len(prompts) * len(methods), desc="bench",
                                                       file=sys.stderr) as bar:
        for q in prompts:
            for m in methods:  # interleaved, so drift on a noisy machine hits every method alike
                row = run_one(lm, q, m, cfg)
                rows.append(row)
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                f.flush()
                bar.set_postfix_str(f"{m} {row['tokens_per_s']:.1f} tok/s")
                bar.update()
    print(summarize(rows, a.temperature))
    return 0


if __name__ == "__main__":
    sys.exit(main())
