"""One-at-a-time sweeps of M, K, DET and LOI around the defaults: tau and speedup vs vanilla.

    python -m clasp_core.sweep --prompts ../shared/bench/specbench-dev.jsonl --per-task 1 \
        --max-new-tokens 64 --out sweep.jsonl

For each prompt, vanilla runs once and every setting of the sweep runs CLaSp on the same
prompt (all greedy, so every run must produce the same tokens: the sweep checks that too).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict

from .bench import read_prompts, task_of
from .decoding import GenConfig, default_num_skip, encode_prompt, generate
from .model import load_model


def grid(L: int, base: GenConfig) -> list[tuple[str, object, GenConfig]]:
    """(parameter, value, config) for each point; the other parameters stay at their defaults."""
    d = base.__dict__
    points = []
    for m in sorted({max(1, round(f * L)) for f in (0.1, 0.2, 0.3, 0.45, 0.6)}):
        points.append(("M", m, GenConfig(**{**d, "num_skip": m})))
    for k in (1, 2, 4, 8):
        points.append(("K", k, GenConfig(**{**d, "draft_len": k})))
    for det in (0.0, 0.3, 0.5, 0.7, 0.9):
        points.append(("DET", det, GenConfig(**{**d, "det": det})))
    for loi in (1, 4, 16, 64):
        points.append(("LOI", loi, GenConfig(**{**d, "loi": loi})))
    return points


def pick_prompts(rows: list[dict], per_task: int) -> list[dict]:
    seen: dict[str, int] = defaultdict(int)
    out = []
    for r in rows:
        t = task_of(r["category"])
        if seen[t] < per_task:
            seen[t] += 1
            out.append(r)
    return out


def summarize(rows: list[dict]) -> str:
    van = defaultdict(float)
    van_tok = defaultdict(int)
    for r in rows:
        if r["param"] == "vanilla":
            van["all"] += r["wall_s"]
            van_tok["all"] += r["new_tokens"]
    v_rate = van_tok["all"] / van["all"]
    agg = defaultdict(lambda: dict(wall=0.0, tok=0, rounds=0, emitted=0, dp=0.0, same=0, n=0))
    for r in rows:
        if r["param"] == "vanilla":
            continue
        a = agg[(r["param"], r["value"])]
        a["wall"] += r["wall_s"]
        a["tok"] += r["new_tokens"]
        a["rounds"] += r["rounds"]
        a["emitted"] += r["new_tokens"] - 1
        a["dp"] += r["dp_s"]
        a["same"] += r["same_as_vanilla"]
        a["n"] += 1
    lines = ["| parameter | value | tau | tokens/s | x vanilla | DP share | same tokens as vanilla |",
             "|---|---|---|---|---|---|---|"]
    for (p, v), a in agg.items():
        rate = a["tok"] / a["wall"]
        tau = a["emitted"] / a["rounds"] if a["rounds"] else 0.0
        lines.append(f"| {p} | {v} | {tau:.2f} | {rate:.2f} | {rate / v_rate:.2f}x | "
                     f"{100 * a['dp'] / a['wall']:.1f}% | {a['same']}/{a['n']} |")
    lines.append(f"\nvanilla: {v_rate:.2f} tokens/s")
    return "\n".join(lines)


def main(argv=None) -> int:
    from tqdm.auto import tqdm

    ap = argparse.ArgumentParser(prog="python -m clasp_core.sweep", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--per-task", type=int, default=1)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--model", default=None)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"])
    ap.add_argument("--out", default="sweep.jsonl")
    a = ap.parse_args(argv)
    try:
        lm = load_model(a.model, a.device, a.dtype)
    except ValueError as e:
        raise SystemExit(f"sweep: {e}") from None
    base = GenConfig(max_new_tokens=a.max_new_tokens)
    points = grid(lm.num_layers, base)
    prompts = pick_prompts(read_prompts(a.prompts), a.per_task)
    print(f"model {lm.name}, L={lm.num_layers}, defaults M={default_num_skip(lm.num_layers)} K={base.draft_len} "
          f"DET={base.det} LOI={base.loi}; {len(points)} settings x {len(prompts)} prompts", file=sys.stderr)
    list(generate(lm, "Hi.", GenConfig(max_new_tokens=4), "clasp"))           # warm-up
    rows = []
    with open(a.out, "w") as f, tqdm(total=len(prompts) * (len(points) + 1), desc="sweep", file=sys.stderr) as bar:
        for q in prompts:
            ids, _ = encode_prompt(lm, q["turns"][0])
            ref = list(generate(lm, None, base, "vanilla", prompt_ids=ids))[-1]
            runs = [("vanilla", None, ref)]
            bar.update()
            for param, value, cfg in points:
                runs.append((param, value, list(generate(lm, None, cfg, "clasp", prompt_ids=ids))[-1]))
                bar.update()
            for param, value, d in runs:
                row = dict(question_id=q["question_id"], task=task_of(q["category"]), param=param, value=value,
                           new_tokens=d.new_tokens, wall_s=d.wall_s, rounds=d.rounds, drafted=d.drafted,
                           accepted=d.accepted, tau=d.tau, dp_s=d.dp_s, same_as_vanilla=d.output_ids == ref.output_ids)
                rows.append(row)
                f.write(json.dumps(row) + "\n")
    print(summarize(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
