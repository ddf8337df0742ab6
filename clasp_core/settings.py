"""The run settings, one row each: name, range, default, label and help.

One table so that the engine's defaults (``GenConfig``), the page's sliders, the bench's flags and the
app's ``/run`` API cannot drift apart: each reads its numbers and words from here. The range is the
page's (what a slider offers); the engine checks its own, wider, bounds in ``GenConfig.resolved``,
once it knows the model (M's bound is the model's depth). No gradio here: ``ui.views.knobs`` makes the
widgets, ``add_flags`` the bench's argparse flags.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, replace

SEED_MAX = 2**63 - 1                # a seed must fit a signed 64-bit integer (torch's generator)


@dataclass(frozen=True)
class Setting:
    name: str                       # the GenConfig field, the /run parameter, the bench flag's dest
    kind: type                      # int, float or bool
    default: object                 # the engine's (and the bench's) default
    label: str
    help: str = ""
    lo: float | None = None         # the page's range; None: open (M's top is the model's L - 1)
    hi: float | None = None
    step: float | None = None
    page: object = None             # the page's starting value where it is not ``default``
    short: str | None = None        # the bench flag's short form, e.g. -K

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def start(self):
        """The value the page opens with."""
        return self.default if self.page is None else self.page

    def parse(self, value):
        """``value`` as this setting's kind, or a ValueError that names the setting (a page or API call
        may send a float for an int, None, or text)."""
        if self.kind is bool:
            return bool(value)
        try:
            if self.kind is int:
                number = float(value) if isinstance(value, str) else value
                if number != int(number):
                    raise ValueError
                return int(number)
            return float(value)
        except (TypeError, ValueError, OverflowError):
            what = "a whole number" if self.kind is int else "a number"
            raise ValueError(f"{self.label.split(' — ')[0].split(' (')[0]} must be {what}, got {value!r}.") from None


SETTINGS: dict[str, Setting] = {s.name: s for s in (
    Setting("num_skip", int, None, "M — layers to skip", "layers the draft skips (default about 45% of L)",
            lo=0, step=1, short="-M"),
    Setting("draft_len", int, 8, "K — max draft tokens per round", "most tokens drafted per round",
            lo=1, hi=16, step=1, short="-K"),
    Setting("det", float, 0.7, "DET — stop drafting below this confidence",
            "draft-exiting threshold on the draft's top-1 probability", lo=0.0, hi=1.0, step=0.05),
    Setting("loi", int, 1, "LOI — re-run the layer DP every LOI rounds", "rounds between two layer DPs",
            lo=1, hi=128, step=1),
    Setting("temperature", float, 0.0, "temperature (0 = greedy)", "sampling temperature (0: greedy)",
            lo=0.0, hi=2.0, step=0.05),
    Setting("top_p", float, 1.0, "top-p", "nucleus sampling mass", lo=0.05, hi=1.0, step=0.05),
    Setting("seed", int, 0, "seed", "sampling seed", lo=0, hi=SEED_MAX, step=1),
    Setting("max_new_tokens", int, 128, "max new tokens", "most tokens generated per run",
            lo=8, hi=512, step=8, page=96),
    Setting("auto", bool, False, "auto: choose M and K each round from measured costs",
            "adapt M and K (and fall back to plain steps) from what the run sees", page=True),
)}
DEFAULT = {name: s.default for name, s in SETTINGS.items()}


def parse(values: dict) -> dict:
    """The settings among ``values`` (a page's or API call's raw values), each as its kind; None for M
    stays None (the model's default)."""
    return {name: None if name == "num_skip" and v is None else SETTINGS[name].parse(v)
            for name, v in values.items() if name in SETTINGS}


def add_flags(ap: argparse.ArgumentParser | argparse._ActionsContainer, *names: str) -> None:
    """The bench's flags for ``names``, with the table's defaults and help."""
    for name in names:
        s = SETTINGS[name]
        flags = [s.flag] + ([s.short] if s.short else [])
        default = "" if s.default is None else f" (default: {s.default})"
        ap.add_argument(*flags, type=s.kind, default=s.default, help=(s.help + default).replace("%", "%%"))


@dataclass
class GenConfig:
    """The settings of one run (the engine's; the defaults are the table's).

    ``auto`` picks M <= num_skip per round from the DP's table (every m backtracks from it), so
    it combines with the DP strategies only: ``clasp``, and ``clasp-once`` (the DP then runs once,
    when auto first drafts). The fixed sets (static, early-exit, random) have one set for one M:
    auto with them is a ValueError.
    """

    num_skip: int | None = DEFAULT["num_skip"]     # M: layers the draft skips (None: about 45% of L)
    draft_len: int = DEFAULT["draft_len"]          # K: most tokens drafted per round
    det: float = DEFAULT["det"]                    # draft-exiting threshold on the draft's top-1 probability
    loi: int = DEFAULT["loi"]                      # re-run the layer DP every LOI rounds
    temperature: float = DEFAULT["temperature"]
    top_p: float = DEFAULT["top_p"]
    seed: int = DEFAULT["seed"]
    max_new_tokens: int = DEFAULT["max_new_tokens"]
    auto: bool = DEFAULT["auto"]                   # adapt M and K (and fall back to plain steps) from what the run sees
    strategy: str = "clasp"         # how the skipped layers are chosen: one of STRATEGIES

    def resolved(self, num_layers: int) -> GenConfig:
        """A copy with M filled in; raises ValueError on anything out of range."""
        # imported here: the table itself needs no torch
        from .metrics import default_num_skip
        from .strategies import DP_STRATEGIES, STRATEGIES

        L = num_layers
        M = default_num_skip(L) if self.num_skip is None else self.num_skip
        checks = [
            (isinstance(M, int) and 0 <= M < L, f"M (layers to skip) must be between 0 and {L - 1} "
                                                f"for this {L}-layer model, got {M}"),
            (isinstance(self.draft_len, int) and self.draft_len >= 1,
             f"K (max draft length) must be at least 1, got {self.draft_len}"),
            (_num(self.det) and 0.0 <= self.det <= 1.0, f"DET must be in [0, 1], got {self.det}"),
            (isinstance(self.loi, int) and self.loi >= 1, f"LOI must be at least 1 round, got {self.loi}"),
            (_num(self.temperature) and self.temperature >= 0, f"temperature must be >= 0, got {self.temperature}"),
            (_num(self.top_p) and 0.0 < self.top_p <= 1.0, f"top-p must be in (0, 1], got {self.top_p}"),
            (isinstance(self.seed, int) and 0 <= self.seed <= SEED_MAX,     # past 64 bits torch's generator overflows
             f"seed must be a whole number from 0 to 2**63 - 1 ({SEED_MAX}), got {self.seed}"),
            (isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1,
             f"max new tokens must be at least 1, got {self.max_new_tokens}"),
            (self.strategy in STRATEGIES,
             f"unknown layer-choice strategy {self.strategy!r}; use one of {', '.join(STRATEGIES)}"),
            (not self.auto or self.strategy not in STRATEGIES or self.strategy in DP_STRATEGIES,
             f"auto chooses M each round from the layer DP's table, so it works with the strategies "
             f"{' and '.join(DP_STRATEGIES)} only, not {self.strategy!r}: turn auto off or pick one of those"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)
        return replace(self, num_skip=M)

    @classmethod
    def from_dict(cls, d: dict) -> GenConfig:
        """The settings among ``d`` (a trace's record; other keys are left out), the rest at their defaults."""
        return cls(**{k: v for k, v in d.items() if k in _GEN_FIELDS})


def _num(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


_GEN_FIELDS = frozenset(GenConfig.__dataclass_fields__)
