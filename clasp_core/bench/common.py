"""What every bench CLI repeats: model arguments, load-or-exit, prompts, CUDA sync, tables."""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import torch

from ..model import LoadedModel, load_model, resolve_device, resolve_dtype
from .stats import task_of


def parser(prog: str, doc: str | None, model: bool = True) -> argparse.ArgumentParser:
    """An argument parser with --device, --dtype and (``model``) --model."""
    ap = argparse.ArgumentParser(prog=f"python -m {prog}", description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    if model:
        ap.add_argument("--model", default=None, help="local dir, HF-cache id or .gguf (default: embedded SmolLM2)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"])
    return ap


def fail(prog: str, msg: str) -> SystemExit:
    return SystemExit(f"{prog.rsplit('.', 1)[-1]}: {msg}")


def load_or_exit(prog: str, a: argparse.Namespace) -> LoadedModel:
    try:
        lm = load_model(a.model, a.device, a.dtype)
    except ValueError as e:
        raise fail(prog, str(e)) from None
    print(f"model: {lm.name} | L={lm.num_layers} | {lm.device} {lm.dtype} | torch threads "
          f"{torch.get_num_threads()}", file=sys.stderr)
    return lm


def device_or_exit(prog: str, a: argparse.Namespace) -> tuple[torch.device, torch.dtype]:
    try:
        device = resolve_device(a.device)
        return device, resolve_dtype(a.dtype, device)
    except ValueError as e:
        raise fail(prog, str(e)) from None


def split(prog: str, what: str, text: str, allowed) -> list[str]:
    """A comma list, each item checked against ``allowed``."""
    items = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in items if s not in allowed]
    if bad or not items:
        raise fail(prog, f"unknown {what}(s) {bad}; choose from {', '.join(allowed)}")
    return items


def fractions(prog: str, text: str) -> list[float]:
    try:
        fs = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        fs = []
    if not fs or not all(0 < f < 1 for f in fs):
        raise fail(prog, f"fractions of L must be a comma list of numbers in (0, 1), got {text!r}")
    return fs


# Spec-Bench's first four questions of each task, shipped as package data (see data/NOTICE.md).
DEFAULT_PROMPTS = Path(__file__).resolve().parent / "data" / "spec_bench_dev.jsonl"


def read_prompts(prog: str, path: str | None, limit: int | None = None) -> list[dict]:
    """Spec-Bench questions (JSON lines; the shipped sample when ``path`` is None), the first ``limit``."""
    p = Path(path) if path else DEFAULT_PROMPTS
    if not p.is_file():
        raise fail(prog, f"prompts file not found: {path}")
    rows = [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows[:limit] if limit else rows


def pick_prompts(rows: list[dict], per_task: int) -> list[dict]:
    """The first ``per_task`` questions of each task (fewer where the file has fewer)."""
    seen: dict[str, int] = defaultdict(int)
    out = []
    for r in rows:
        t = task_of(r["category"])
        if seen[t] < per_task:
            seen[t] += 1
            out.append(r)
    return out


def sync(device) -> None:
    """Wait for queued GPU work, so a clock read after it measures it."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def num(x: float | None, fmt: str = ".2f", unit: str = "") -> str:
    return "-" if x is None else f"{x:{fmt}}{unit}"


def md_table(head: list[str], rows: list[list]) -> str:
    """A Markdown table (pasted as is into BENCHMARKS.md)."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_jsonl(f, row: dict) -> None:
    f.write(json.dumps(row, ensure_ascii=False) + "\n")
    f.flush()
