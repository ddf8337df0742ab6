"""What the served page keeps between calls, in one object: the host's arguments, the model cache, the
visitors' sessions and the page's components by name. One page per process, so one ``App``."""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field

from clasp_core.presets import SMOLLM2_HUB
from ui.serving.models import AppModels, Policy, offered_presets
from ui.serving.sessions import Sessions

ON_SPACES = bool(os.environ.get("SPACE_ID"))
# A Space has the real SmolLM2 weights in its Hub cache (preload_from_hub in README.md), not the GGUF package.
DEFAULT_SPEC = SMOLLM2_HUB if ON_SPACES else "default"
DEFAULT_LAYERS = 30                    # the embedded SmolLM2-135M-Instruct


def host_defaults() -> argparse.Namespace:
    """The host's arguments before app.py has parsed any (a test or a bench builds the page without them)."""
    return argparse.Namespace(model=None, device="auto", allow_models=None)


def model_policy(args: argparse.Namespace) -> Policy:
    """Which models load: the presets and the host's default, and what CLASP_ALLOW_MODELS or
    --allow-models adds (locally, unless set, anything)."""
    offered = [p.id for p in offered_presets(args.device, ON_SPACES)] + [DEFAULT_SPEC] + \
        ([args.model] if args.model else [])
    return Policy.from_env(args.allow_models, tuple(dict.fromkeys(offered)))


@dataclass
class App:
    """The page's state. ``models``: the host's allow-list, size and memory checks before a fetch or a load,
    the default model resident and others in an LRU bounded by free memory; one load at a time, visitors
    share the models. ``sessions``: per visitor, the stop flag, the trace file, a run in progress."""

    args: argparse.Namespace = field(default_factory=host_defaults)
    models: AppModels | None = None
    sessions: Sessions = field(default_factory=Sessions)
    components: dict = field(default_factory=dict)     # the page's components by name, filled by ui.page.build

    def __post_init__(self):
        if self.models is None:
            self.models = AppModels(DEFAULT_SPEC, self.args.device)
        self.models.policy = model_policy(self.args)

    def configure(self, args: argparse.Namespace) -> None:
        """The host's arguments: the device, the models allowed, and its default model kept resident."""
        self.args = args
        self.models.device = args.device
        self.models.policy = model_policy(args)
        self.models.resident.add(self.default_model)

    @property
    def default_model(self) -> str:
        return self.args.model or DEFAULT_SPEC
