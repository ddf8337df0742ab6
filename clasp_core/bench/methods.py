"""How each bench method runs one prompt: transformers ``generate`` or this engine, one row each."""
from __future__ import annotations

import time
from dataclasses import replace

import torch

from ..decoding import GenConfig, generate
from ..metrics import dtype_name
from ..model import LoadedModel
from ..prompt import encode_prompt
from ..strategies import LOOKUP_STRATEGIES, Names, registered
from ..ties import run_tops
from ..trace import Round, Step
from .common import sync
from .stats import task_of

HF = {"hf": {}, "hf-lookup": {"prompt_lookup_num_tokens": 10}}    # transformers generate; its own prompt lookup


def engine_methods() -> dict[str, tuple[str, str | None, bool]]:
    """bench method -> (engine method, layer choice, auto M/K): ``vanilla``, then every registered draft
    source under its own name (the same draft/verify loop), with ``auto`` (CLaSp with M and K adapted
    from measured costs) after ``clasp``. Read from the registry, so a new strategy is a method too."""
    table = {"vanilla": ("vanilla", None, False)}
    for s in registered():
        table[s.name] = ("clasp", s.name, s.bench_auto)
        if s.name == "clasp":
            table["auto"] = ("clasp", "clasp", True)
    return table


METHODS = Names(lambda: ("hf", *engine_methods(), "hf-lookup"))


def check(methods: list[str]) -> None:
    """ValueError for a method this engine cannot run."""
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"unknown method {m!r}; choose from {', '.join(METHODS)}")


def engine_config(cfg: GenConfig, method: str) -> tuple[str, GenConfig]:
    kind, strategy, auto = engine_methods()[method]
    return kind, replace(cfg, auto=auto, strategy=strategy or "clasp")


def run_hf(lm: LoadedModel, ids: list[int], cfg: GenConfig, extra: dict | None = None) -> dict:
    """transformers ``generate``: the losslessness reference at T=0 (``extra``: more generate kwargs)."""
    x = torch.tensor([ids], device=lm.model.device)
    kw = dict(do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p, top_k=None) \
        if cfg.temperature > 0 else dict(do_sample=False, temperature=None, top_p=None, top_k=None)
    if cfg.temperature > 0:
        torch.manual_seed(cfg.seed)
    tok = lm.tokenizer                 # None for a bare model (the tests' tiny ones): ids in, ids out
    pad = (tok.pad_token_id if tok is not None else None) or (lm.eos_ids or [lm.config.pad_token_id or 0])[0]
    sync(lm.device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = lm.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=cfg.max_new_tokens,
                                pad_token_id=pad, **kw, **(extra or {}))
    sync(lm.device)
    wall = time.perf_counter() - t0
    out = out[0, len(ids):].tolist()
    return dict(new_tokens=len(out), wall_s=wall, tokens_per_s=len(out) / wall, token_ids=out,
                text=tok.decode(out, skip_special_tokens=True) if tok is not None else "",
                accept_lengths=[1] * len(out),
                graphs=0, graph_capture_s=0.0)       # transformers runs eagerly: none of our graphs


def run_engine(lm: LoadedModel, ids: list[int], cfg: GenConfig, method: str) -> dict:
    kind, cfg = engine_config(cfg, method)
    events = list(generate(lm, None, cfg, kind, prompt_ids=ids))
    done = events[-1]
    row = dict(new_tokens=done.new_tokens, wall_s=done.wall_s, tokens_per_s=done.tokens_per_s,
               token_ids=done.output_ids, text=done.text,
               # tokens each decoding step added (the prefill's token is no step)
               accept_lengths=[len(e.emitted) if isinstance(e, Round) else 1
                               for e in events if isinstance(e, (Round, Step))])
    runner = lm.runner  # whether the run replayed CUDA graphs, and what capturing cost before it
    row.update(graphs=runner.graphs, graph_capture_s=events[0].setup.get("graph_capture_s", 0.0),
               graph_failed=runner.capture_failed)
    if cfg.temperature == 0:         # the full model's top two per token: ties.classify reads them
        _, tops = run_tops(events)
        row.update(top_ids=[t[0] if t else None for t in tops], top_logits=[t[1] if t else None for t in tops])
    if kind == "clasp":
        row.update(M=cfg.resolved(lm.num_layers).num_skip, rounds=done.rounds, drafted=done.drafted,
                   accepted=done.accepted, tau=done.tau, dp_s=done.dp_s, draft_s=done.draft_s,
                   verify_s=done.verify_s)
        copies = [e for e in events if isinstance(e, Round) and e.lookup]
        if copies or cfg.strategy in LOOKUP_STRATEGIES:
            row.update(copy_rounds=len(copies), copied=sum(len(e.drafted) for e in copies),
                       copied_accepted=sum(e.accepted for e in copies))
    return row


def run_one(lm: LoadedModel, q: dict, method: str, cfg: GenConfig) -> dict:
    """One row: the question, the method, its tokens, timings and (drafting methods) counts."""
    ids, _ = encode_prompt(lm, q["turns"][0])
    row = run_hf(lm, ids, cfg, HF[method]) if method in HF else run_engine(lm, ids, cfg, method)
    return dict(question_id=q["question_id"], category=q["category"], task=task_of(q["category"]),
                method=method, dtype=dtype_name(lm.dtype), **row)


def reserve(lm: LoadedModel, prompts: list[dict], cfg: GenConfig) -> int:
    """Allocate the KV cache once for the longest prompt (and capture the graphs for it) before the
    warm-up, so no prompt of the run grows the cache and recaptures every graph. Returns its size."""
    cfg = cfg.resolved(lm.num_layers)
    longest = max(len(encode_prompt(lm, q["turns"][0])[0]) for q in prompts)
    runner = lm.runner
    runner.allocate(longest + cfg.max_new_tokens + cfg.draft_len + cfg.num_skip + 2)   # as generate() asks
    runner.prepare(cfg.draft_len + 1)
    return runner.capacity


def warm_up(lm: LoadedModel, methods: list[str], cfg: GenConfig) -> None:
    """A short run of each method, so first-call costs stay out of the timings."""
    q = {"question_id": -1, "category": "warmup", "turns": ["Say hello."]}
    short = replace(cfg, max_new_tokens=8)
    for m in methods:
        run_one(lm, q, m, short)
