"""Which models the app loads, and how visitors share them.

On a public Space any visitor can type into the model field, so the host decides what loads
(``Policy``), and nothing is fetched or loaded that cannot fit (``clasp_core.fit.Guard``): a 70B
download would fill the disk, an 8B load in float32 on a 16 GB machine ends with the kernel
killing the app and every visitor's run. ``ModelCache`` keeps the default model resident and
other models in a small LRU bounded by free memory, not by count, and never evicts a model that
a queued run is waiting for. ``AppModels`` is the app's cache: its host's default model and device,
every load and warm-up in the engine thread (ui.serving.engine), progress lines for the page (``Loading``).
No gradio here: the app turns the ValueErrors into page messages.
"""
from __future__ import annotations

import fnmatch
import gc
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

from clasp_core.fit import GB, Guard, loaded_bytes
from clasp_core.metrics import dtype_name
from clasp_core.model import LoadedModel, embedded_installed, load_model, resolve_device, resolve_dtype
from clasp_core.presets import presets_for
from ui.serving.engine import ENGINE

ALLOW_ENV = "CLASP_ALLOW_MODELS"
DOWNLOAD_ENV = "CLASP_MAX_DOWNLOAD_GB"
RUN_TOKENS = 4096          # the longest run a model is sized for: prompt + max new tokens (512), with margin


def default_spec(spec: str | None, default: str) -> str:
    """The model a run asks for: the field's text, or the default when it is empty."""
    return (spec or "").strip() or default


@dataclass
class Policy:
    """What the model field accepts.

    Locally (no SPACE_ID) anything: a local dir, a .gguf, a Hub id. On a Space only the presets
    and the host's default, unless the host allows more: ``CLASP_ALLOW_MODELS`` or
    ``--allow-models`` is ``*`` or a comma list of ids and globs (``HuggingFaceTB/*``). A list set
    locally applies there too."""
    on_space: bool = False
    allow: tuple[str, ...] | None = None        # None: not set
    offered: tuple[str, ...] = ()               # presets of this device and the host's default model
    setting: str = ALLOW_ENV

    @classmethod
    def from_env(cls, allow_flag: str | None = None, offered: tuple[str, ...] = ()) -> Policy:
        raw = allow_flag if allow_flag is not None else os.environ.get(ALLOW_ENV)
        allow = None if raw is None else tuple(p.strip() for p in raw.split(",") if p.strip())
        return cls(on_space=bool(os.environ.get("SPACE_ID")), allow=allow, offered=offered,
                   setting="--allow-models" if allow_flag is not None else ALLOW_ENV)

    @property
    def free_text(self) -> bool:
        """Whether the model field takes anything typed in (and whatever is allowed is checked on run)."""
        return self.allow is None and not self.on_space or "*" in (self.allow or ()) or \
            any(any(c in p for c in "*?[") for p in self.allow or ())

    @property
    def extra(self) -> list[str]:
        """Ids the host allowed by name, offered in the field next to the presets."""
        return [p for p in self.allow or () if not any(c in p for c in "*?[") and p not in self.offered]

    def allows(self, spec: str) -> bool:
        if spec in self.offered:
            return True
        if self.allow is None:
            return not self.on_space
        return any(fnmatch.fnmatchcase(spec, p) for p in self.allow)

    def check(self, spec: str) -> None:
        """Raise a ValueError that names the setting when ``spec`` is not allowed here."""
        if self.allows(spec):
            return
        where = "this Space" if self.on_space else "this app"
        shown = ", ".join(self.offered + tuple(self.extra))
        if self.allow is None:
            how = (f"The host can allow more with {self.setting} (a comma list of ids and globs, "
                   f"e.g. {self.setting}='HuggingFaceTB/*', or '*' for any).")
        else:
            how = f"The host allows these with {self.setting}: {', '.join(self.allow) or '(none)'}."
        raise ValueError(f"Model {spec!r} is not offered on {where}: pick one of {shown}. {how}")

    def info(self) -> str:
        """The model field's help line."""
        if self.allow is None and not self.on_space:
            return ("a preset, or type a local dir, a .gguf file or a Hugging Face Hub id "
                    "(downloaded into the HF cache once)")
        if self.free_text:
            return f"a preset, or a Hub id the host allows ({', '.join(self.allow or ())})"
        return f"the models this Space offers (the host can allow more with {ALLOW_ENV})"


def model_bytes(lm: LoadedModel) -> int:
    """Memory a loaded model holds: weights, and its runner's KV cache and packed copies once it has run."""
    return loaded_bytes(lm.model, lm.built_runner)


@dataclass
class Entry:
    model: LoadedModel
    used: float = field(default_factory=time.monotonic)


class ModelCache:
    """Loaded models by (spec, device, dtype): the resident ones stay, the others are evicted least recently
    used first, and only when a load needs their memory and no queued run wants them (``queued``
    says which models the waiting runs asked for).

    ``models`` maps key to LoadedModel (what the app reads); one load at a time."""

    def __init__(self, policy: Policy | None = None, loader: Callable[..., LoadedModel] = load_model,
                 resident: tuple[str, ...] = ("default",), guard: Callable[..., Guard] | None = None,
                 measure: Callable[[LoadedModel], int] = model_bytes,
                 queued: Callable[[], Iterable[tuple[str, str]]] = tuple):
        self.policy = policy or Policy()
        self.loader = loader
        self.resident = set(resident)
        self.models: dict[tuple[str, str, str], LoadedModel] = {}
        self.entries: dict[tuple[str, str, str], Entry] = {}
        self.queued = queued                                      # the keys of the runs waiting their turn
        self.loading: str | None = None                           # the spec being loaded now
        self.loads: Counter = Counter()                           # key -> times loaded (tests, logs)
        self.lock = threading.Lock()                              # one load at a time
        self.book = threading.Lock()                              # guards models/entries
        self.make_guard = guard or self.default_guard
        self.measure = measure

    # ---- loading -----------------------------------------------------------------------------
    def get(self, spec: str, device: str, progress: Callable[[str], None] | None = None,
            prepare: Callable[[LoadedModel], None] | None = None, dtype: str = "auto") -> LoadedModel:
        """The model in ``dtype``, loaded if need be; the allow-list, download and memory checks come first,
        and a refusal leaves every loaded model as it was. Keys are (spec, device, dtype)."""
        key = (spec, device, dtype)
        self.policy.check(spec)
        if key in self.models:
            return self._touch(key)
        if self.loading is not None and progress is not None:
            progress(f"Waiting: {self.loading} is loading for another run; this run starts after it…")
        with self.lock:
            if key in self.models:          # loaded by the run we waited for
                return self._touch(key)
            self.loading = spec
            try:
                lm = self.loader(spec, device=device, dtype=dtype, progress=progress, guard=self.make_guard(key))
                if prepare is not None:
                    prepare(lm)
            finally:
                self.loading = None
            with self.book:
                self.models[key] = lm
                self.entries[key] = Entry(lm)
                self.loads[key] += 1
            return lm

    def _touch(self, key) -> LoadedModel:
        self.entries[key].used = time.monotonic()
        return self.models[key]

    def evictable(self, keep: tuple[str, str, str] | None = None) -> list[tuple[str, str, str]]:
        """Loaded models that may go, least recently used first: not resident, not wanted by a queued run,
        on the device of ``keep`` (the model about to load). A running run's model is never among them:
        runs and loads take turns (one run at a time), and a run's own load keeps its model."""
        wanted = {tuple(w[:2]) for w in self.queued()}              # (spec, device): any dtype of it stays
        with self.book:
            keys = [k for k in self.entries if k[0] not in self.resident and k[:2] not in wanted and k != keep
                    and (keep is None or k[1] == keep[1])]
        return sorted(keys, key=lambda k: self.entries[k].used)

    def reclaimable(self, keep=None) -> int:
        return sum(self.measure(self.models[k]) for k in self.evictable(keep))

    def make_room(self, need: int, free: Callable[[], int], keep=None) -> None:
        """Evict least recently used models until ``need`` bytes are free (or none is left to evict)."""
        for key in self.evictable(keep):
            if free() >= need:
                return
            self.evict(key)

    def evict(self, key) -> None:
        with self.book:
            lm = self.models.pop(key, None)
            self.entries.pop(key, None)
        del lm
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def default_guard(self, key) -> Guard:
        """The limits for loading ``key``: the host's download cap, free disk, free memory counting
        the models this load may evict."""
        cap = os.environ.get(DOWNLOAD_ENV)
        try:
            cap_bytes = float(cap) * GB if cap else None
        except ValueError:
            raise ValueError(f"{DOWNLOAD_ENV}={cap!r} is not a number of GB") from None
        guard = Guard(tokens=RUN_TOKENS, max_download=cap_bytes, download_setting=DOWNLOAD_ENV)
        guard.reclaimable = lambda: self.reclaimable(keep=key)
        guard.make_room = lambda need: self.make_room(need, lambda: guard.free_memory(resolve_device(key[1])), key)
        return guard


# ---- the app's models ----------------------------------------------------------------------------
def model_key(spec: str | None, device: str, dtype: str | None = "auto",
              default: str = "default") -> tuple[str, str, str]:
    """The cache's key: the same weights in another dtype are another model."""
    return (default_spec(spec, default), device, dtype_name(resolve_dtype(dtype, resolve_device(device))))


def warm_up(lm: LoadedModel) -> None:
    """One short run of each loop, so the first measured run is not paying for it."""
    from clasp_core.decoding import GenConfig, generate

    for method in ("clasp", "vanilla"):
        list(generate(lm, "Hi.", GenConfig(max_new_tokens=4), method))


def offered_presets(device: str, on_space: bool) -> list:
    """The presets that suit this device (the embedded one only where installed, never on a Space)."""
    return presets_for(resolve_device(device).type, embedded=embedded_installed() and not on_space)


class AppModels(ModelCache):
    """The app's models: a ``ModelCache`` that knows the host's default model and device, so a run
    names only the model field's text and a dtype; loads and warm-ups happen in the engine thread."""

    def __init__(self, default: str, device: str = "auto", **kwargs):
        super().__init__(resident=(default,), **kwargs)
        self.default = default
        self.device = device

    def key(self, spec: str | None, dtype: str | None = "auto") -> tuple[str, str, str]:
        return model_key(spec, self.device, dtype, self.default)

    def loaded(self, spec: str | None, dtype: str | None = "auto") -> LoadedModel | None:
        """The model if it is in memory (no load, no check)."""
        return self.models.get(self.key(spec, dtype))

    def default_dtype(self) -> str:
        """float32 on a CPU; the device's usual half precision (float16) on a GPU."""
        return dtype_name(resolve_dtype("auto", resolve_device(self.device)))

    def load(self, spec: str | None, progress: Callable[[str], None] | None = None, warm: bool = True,
             dtype: str | None = "auto") -> LoadedModel:
        """The model for spec and dtype, loaded and warmed up once; always in the engine thread (ui.serving.engine),
        the one thread that runs torch in this process."""
        if not ENGINE.here():
            return ENGINE.call(self.load, spec, progress, warm, dtype)
        spec, device, dtype = self.key(spec, dtype)
        return self.get(spec, device, progress, prepare=announced(warm_up, progress) if warm else None, dtype=dtype)

    def readiness(self, spec: str | None) -> str:
        """The status line as the page opens: what the first run will wait for while the model is not in memory
        (a load under way for another run, or converting, loading and warming up), else ready."""
        if self.loaded(spec) is not None:
            return "Ready."
        if self.loading is not None:
            return f"Loading {self.loading} for another run (converting, loading, warming up); a run waits for it…"
        first = ("on a first start, converting the embedded weights once, about 30 s; then loading"
                 if default_spec(spec, self.default) == "default" else "fetching it if need be, then loading")
        return (f"Ready. The model is not in memory yet: the first run loads it first ({first} and a short "
                f"warm-up), and says each step here.")


def announced(prepare: Callable[[LoadedModel], None], progress: Callable[[str], None] | None):
    """The warm-up, said on the status line before it runs (a first run otherwise waits in silence)."""
    def run(lm: LoadedModel) -> None:
        if progress is not None:
            progress("Warming up: one short run of each loop, so the first measured run does not pay for it…")
        prepare(lm)
    return run


class Loading:
    """Load (or reuse) a model in the engine thread; iterating yields its progress lines (download size
    and speed, conversion, loading), so the page can show them; then ``.model`` is the model."""

    def __init__(self, models: AppModels, spec: str | None, dtype: str | None = "auto"):
        self.lines: queue.SimpleQueue = queue.SimpleQueue()
        self.result: dict = {}
        ENGINE.submit(self._work, models, spec, dtype)

    def _work(self, models, spec, dtype):
        try:
            self.result["model"] = models.load(spec, self.lines.put, dtype=dtype)
        except BaseException as e:  # noqa: BLE001 - handed to the page
            self.result["error"] = e
        finally:
            self.lines.put(None)

    def __iter__(self):
        while (line := self.lines.get()) is not None:
            yield line

    @property
    def model(self) -> LoadedModel:
        if "error" in self.result:
            raise self.result["error"]
        return self.result["model"]
