"""Spec-Bench answer files from bench rows, so its ``evaluation/speed.py`` reads our runs.

One file per method, ``DIR/<model_id>-<method>.jsonl``, one line per question, shaped as
hemingkx/Spec-Bench's ``evaluation/eval.py`` writes them: per-turn lists for ``turns``,
``decoding_steps``, ``new_tokens`` and ``wall_time`` (one turn here), one flat list of
``accept_lengths`` (tokens added per decoding step; all 1 for ``hf``, as its baseline writes).
"""
from __future__ import annotations

import json
import re
import time
import uuid
from collections import defaultdict
from pathlib import Path


def model_id(name: str) -> str:
    """A file-name-safe id: ``HuggingFaceTB/SmolLM2-135M`` -> ``HuggingFaceTB--SmolLM2-135M``; a display
    name's note in brackets is dropped (``SmolLM2-135M-Instruct (embedded, …)`` -> ``SmolLM2-135M-Instruct``)."""
    name = name.split(" (")[0].replace("/", "--")
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "model"


def answer(row: dict, model: str) -> dict:
    steps = row["accept_lengths"]
    return dict(question_id=row["question_id"], category=row["category"], answer_id=uuid.uuid4().hex,
                model_id=model, tstamp=time.time(),
                choices=[dict(index=0, turns=[row["text"]], decoding_steps=[len(steps)],
                              new_tokens=[row["new_tokens"]], wall_time=[row["wall_s"]],
                              accept_lengths=list(steps))])


def write_answers(rows: list[dict], directory: str | Path, model: str) -> list[Path]:
    """Write one answer file per method in ``rows``; returns their paths."""
    by = defaultdict(list)
    for r in rows:
        by[r["method"]].append(r)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for method, rs in by.items():
        path = out / f"{model}-{method}.jsonl"
        path.write_text("".join(json.dumps(answer(r, model), ensure_ascii=False) + "\n" for r in rs),
                        encoding="utf-8")
        paths.append(path)
    return paths
