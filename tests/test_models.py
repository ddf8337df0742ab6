"""The public app's model policy with no network: who may load what, and nothing fetched or loaded that
cannot fit. The Hub's answers are faked at HfApi.model_info; a 70B model is a config and safetensors
headers with no weights behind them."""
import json
import struct
import threading
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest
import torch
from huggingface_hub import constants

from clasp_core import fit
from clasp_core.decoding import GenConfig, generate
from clasp_core.model import from_modules, load_model
from tests.conftest import tiny_llama
from ui.serving.models import ModelCache, Policy, offered_presets

PRESETS = ("default", "HuggingFaceTB/SmolLM2-135M-Instruct")
LLAMA_70B = dict(vocab_size=128256, hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                 num_attention_heads=64, num_key_value_heads=8, max_position_embeddings=8192)


# ---- a 70B model with no weights ------------------------------------------------------------
def llama_shapes(vocab_size, hidden_size, intermediate_size, num_hidden_layers, num_attention_heads,
                 num_key_value_heads, **_):
    """Tensor name -> shape of a Llama checkpoint (untied head)."""
    h, i, kv = hidden_size, intermediate_size, num_key_value_heads * hidden_size // num_attention_heads
    shapes = {"model.embed_tokens.weight": [vocab_size, h], "model.norm.weight": [h], "lm_head.weight": [vocab_size, h]}
    for n in range(num_hidden_layers):
        p = f"model.layers.{n}."
        shapes.update({p + "self_attn.q_proj.weight": [h, h], p + "self_attn.k_proj.weight": [kv, h],
                       p + "self_attn.v_proj.weight": [kv, h], p + "self_attn.o_proj.weight": [h, h],
                       p + "mlp.gate_proj.weight": [i, h], p + "mlp.up_proj.weight": [i, h],
                       p + "mlp.down_proj.weight": [h, i], p + "input_layernorm.weight": [h],
                       p + "post_attention_layernorm.weight": [h]})
    return shapes


def write_headers_only(path: Path, shapes: dict, dtype: str = "BF16") -> None:
    """A .safetensors file whose header names every tensor, with none of the tensor bytes after it."""
    header, at = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in shapes.items():
        n = fit.ST_BYTES[dtype] * int(torch.tensor(shape).prod())
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [at, at + n]}
        at += n
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)


@pytest.fixture
def huge_dir(tmp_path):
    """A directory shaped like a Llama 70B: config.json and two safetensors headers, 0 bytes of weights."""
    d = tmp_path / "llama-70b-shaped"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"],
                                               "tie_word_embeddings": False, **LLAMA_70B}))
    shapes = list(llama_shapes(**LLAMA_70B).items())
    write_headers_only(d / "model-00001-of-00002.safetensors", dict(shapes[:400]))
    write_headers_only(d / "model-00002-of-00002.safetensors", dict(shapes[400:]))
    return d


def test_parameter_count_from_headers_alone(huge_dir):
    assert sum(f.stat().st_size for f in huge_dir.glob("*.safetensors")) < 200_000     # no weights on disk
    assert round(fit.parameter_count(huge_dir) / 1e9, 2) == 70.55


def test_load_refused_by_memory_before_any_weight_is_read(huge_dir):
    guard = fit.Guard(free_memory=lambda device: 14e9)
    with pytest.raises(ValueError) as e:
        load_model(str(huge_dir), device="cpu", dtype="float32", guard=guard)
    assert str(e.value) == (
        "Not loaded: llama-70b-shaped needs ~313.1 GB in float32 (weights 282.2 GB, KV cache for 4096 tokens "
        "2.7 GB, working room 28.2 GB), and this machine has 14.0 GB of RAM free: pick a smaller model, or "
        "float16 on a GPU.")
    with pytest.raises(ValueError, match=r"needs ~156\.\d GB in float16 .* 80\.0 GB of VRAM free: pick a smaller "
                                         r"model\.$"):
        fit.Guard(free_memory=lambda device: 80e9).before_load(
            "llama-70b-shaped", str(huge_dir), SimpleNamespace(**LLAMA_70B), torch.device("cuda"), torch.float16)


def test_a_small_model_on_a_cpu_counts_the_runners_packed_copy(monkeypatch):
    cpu = torch.device("cpu")
    assert fit.packed_copy(500_000_000, cpu) == 500_000_000         # as clasp_core.backends.cpu.want_packed decides
    assert fit.packed_copy(500_000_000, torch.device("cuda")) == 0
    monkeypatch.setenv("CLASP_CPU_PACKED", "0")
    assert fit.packed_copy(500_000_000, cpu) == 0
    assert "packed CPU copy 0.50 GB" in fit.Need(weights=500_000_000, copy=500_000_000).describe(torch.float32)


# ---- downloads, sized from faked Hub metadata ----------------------------------------------
def fake_model_info(repos: dict):
    """HfApi.model_info for the repos given as {id: (sha, {file: bytes}, parameters or None)}."""
    def model_info(self, repo_id, files_metadata=False, **kw):
        if repo_id not in repos:
            raise huggingface_hub.errors.RepositoryNotFoundError(f"{repo_id} not found")
        sha, files, params = repos[repo_id]
        assert files_metadata
        return SimpleNamespace(id=repo_id, sha=sha, siblings=[SimpleNamespace(rfilename=f, size=n)
                                                              for f, n in files.items()],
                               safetensors=SimpleNamespace(total=params) if params else None)
    return model_info


BIG_FILES = {f"model-{i:05d}-of-00030.safetensors": 4_700_000_000 for i in range(1, 31)} | {
    "config.json": 1_000, "tokenizer.json": 9_000_000, "original/consolidated.00.pth": 140_000_000_000,
    "README.md": 40_000}


@pytest.fixture
def online_hub(monkeypatch, tmp_path):
    """The Hub as the loader sees it, answered by fakes: model_info from a table, snapshots from the
    local cache (tmp_path/hub) only, never a download."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    snapshot = huggingface_hub.snapshot_download
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda *a, **k: snapshot(*a, **{**k, "local_files_only": True}))

    def serve(repos):
        monkeypatch.setattr(huggingface_hub.HfApi, "model_info", fake_model_info(repos))
    return serve


def test_download_refused_by_the_cap_and_by_the_free_disk(online_hub):
    online_hub({"org/big-70b": ("abc123", BIG_FILES, None)})
    with pytest.raises(ValueError) as e:
        load_model("org/big-70b", device="cpu", guard=fit.Guard(max_download=20e9))
    assert str(e.value) == ("Not downloaded: org/big-70b is 141.0 GB to download (32 files), over this app's cap of "
                            "20.0 GB (CLASP_MAX_DOWNLOAD_GB). Pick a smaller model.")   # original/, README: not fetched
    with pytest.raises(ValueError, match=r"^Not downloaded: org/big-70b is 141\.0 GB to download \(32 files\), and "
                                         r"the disk of the Hugging Face cache \(.*hub\) has 45\.0 GB free\. "):
        load_model("org/big-70b", device="cpu", guard=fit.Guard(free_disk=lambda path: 45e9))


def test_weights_that_cannot_fit_are_not_even_downloaded(online_hub):
    online_hub({"org/8b": ("abc123", {"model.safetensors": 16_000_000_000, "config.json": 700}, 8_030_000_000)})
    guard = fit.Guard(free_memory=lambda device: 16e9, free_disk=lambda path: 100e9)
    with pytest.raises(ValueError, match=r"^Not loaded: org/8b needs ~35\.3 GB in float32 \(weights 32\.1 GB, working "
                                         r"room 3\.2 GB\), and this machine has 16\.0 GB of RAM free: pick a smaller "
                                         r"model, or float16 on a GPU\.$"):
        load_model("org/8b", device="cpu", guard=guard)


def test_files_already_in_the_cache_are_not_counted(online_hub, tmp_path):
    from tests.test_loading import hub_cache
    files = tmp_path / "files"
    files.mkdir()
    for name in ("model-00001-of-00030.safetensors", "config.json"):
        (files / name).write_bytes(b"x")
    hub_cache(tmp_path, "org/big-70b", sorted(files.iterdir()), rev="abc123")
    online_hub({"org/big-70b": ("abc123", BIG_FILES, None)})
    size = fit.hub_size("org/big-70b", ["*.json", "*.safetensors"], ["original/*"])
    assert (size.total, size.to_fetch, size.files) == (141_009_001_000, 136_309_000_000, 32)


# ---- who may load what ------------------------------------------------------------------------
def test_on_a_space_only_the_presets_unless_the_host_allows_more(monkeypatch):
    monkeypatch.setenv("SPACE_ID", "someone/clasp")
    monkeypatch.delenv("CLASP_ALLOW_MODELS", raising=False)
    space = Policy.from_env(None, PRESETS)
    assert space.allows("default") and not space.free_text
    with pytest.raises(ValueError) as e:
        space.check("meta-llama/Llama-3.1-70B-Instruct")
    assert str(e.value) == (
        "Model 'meta-llama/Llama-3.1-70B-Instruct' is not offered on this Space: pick one of default, "
        "HuggingFaceTB/SmolLM2-135M-Instruct. The host can allow more with CLASP_ALLOW_MODELS (a comma list of "
        "ids and globs, e.g. CLASP_ALLOW_MODELS='HuggingFaceTB/*', or '*' for any).")

    monkeypatch.setenv("CLASP_ALLOW_MODELS", "HuggingFaceTB/*, org/exact")
    globbed = Policy.from_env(None, PRESETS)
    assert globbed.allows("HuggingFaceTB/SmolLM2-1.7B-Instruct") and globbed.allows("org/exact")
    assert globbed.free_text and globbed.extra == ["org/exact"]
    with pytest.raises(ValueError, match=r"not offered on this Space: .* The host allows these with "
                                         r"CLASP_ALLOW_MODELS: HuggingFaceTB/\*, org/exact\.$"):
        globbed.check("org/other")
    flag = Policy.from_env("org/*", PRESETS)              # --allow-models wins over the variable, and is named
    assert flag.allows("org/other") and not flag.allows("HuggingFaceTB/SmolLM2-1.7B-Instruct")
    with pytest.raises(ValueError, match=r"with --allow-models: org/\*\.$"):
        flag.check("HuggingFaceTB/SmolLM2-1.7B-Instruct")
    assert Policy.from_env("*", PRESETS).allows("/any/local/dir")


def test_locally_the_field_takes_anything(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("CLASP_ALLOW_MODELS", raising=False)
    local = Policy.from_env(None, PRESETS)
    assert local.free_text and local.allows("~/models/my-llama") and local.allows("org/anything")
    assert "local dir" in local.info()


def test_the_space_field_offers_presets_and_named_ids(monkeypatch):
    import gradio as gr

    import app
    from ui.page import model_field
    from ui.serving.app_state import ON_SPACES, model_policy
    from ui.serving.handlers import APP

    monkeypatch.setenv("SPACE_ID", "someone/clasp")
    monkeypatch.delenv("CLASP_ALLOW_MODELS", raising=False)
    args = app.parse_args(["--allow-models", "org/exact,Qwen/*"])
    monkeypatch.setattr(APP.models, "policy", model_policy(args))
    with gr.Blocks():
        field = model_field(None)
    values = [v for _, v in field.choices]
    assert values[-1] == "org/exact" and "Qwen/*" not in values
    assert "org/exact, Qwen/*" in field.info and APP.models.policy.setting == "--allow-models"
    monkeypatch.setattr(APP.models, "policy", model_policy(app.parse_args([])))
    with gr.Blocks():
        field = model_field(None)
    assert [v for _, v in field.choices] == [p.id for p in offered_presets(APP.models.device, ON_SPACES)]
    assert "CLASP_ALLOW_MODELS" in field.info


# ---- sharing: the default stays, others in an LRU bounded by memory ---------------------------
class FakeMachine:
    """Models of declared sizes loaded into a machine with `ram` bytes: the free memory the guard sees
    is what the loaded ones leave."""

    def __init__(self, ram: float, sizes: dict):
        self.ram, self.sizes, self.cache = ram, sizes, None
        self.go = {}                                   # spec -> Event the load waits for (when set up)

    def free(self, device=None) -> int:
        return int(self.ram - sum(self.sizes[spec] for spec, *_ in self.cache.models))

    def loader(self, spec, device, dtype="auto", progress=None, guard=None):
        if spec in self.go:
            self.go[spec].wait(30)
        guard.check_memory(spec, fit.Need(weights=self.sizes[spec]), torch.device("cpu"), torch.float32)
        guard.make_room(fit.Need(weights=self.sizes[spec]).total)
        return from_modules(tiny_llama(layers=2), name=spec)

    def build(self, **kw) -> ModelCache:
        def guard(key):
            g = fit.Guard(free_memory=self.free)
            g.reclaimable = lambda: cache.reclaimable(keep=key)
            g.make_room = lambda need: cache.make_room(need, lambda: self.free(), keep=key)
            return g
        cache = ModelCache(Policy(), loader=self.loader, resident=("default",), guard=guard,
                           measure=lambda lm: int(self.sizes[lm.name]), **kw)
        self.cache = cache
        return cache


def serves(cache: ModelCache, spec="default") -> bool:
    """The model answers a short run (and was not loaded again for it)."""
    loads = cache.loads[(spec, "cpu", "auto")]
    lm = cache.get(spec, "cpu")
    done = list(generate(lm, None, GenConfig(num_skip=1, max_new_tokens=4), "vanilla", prompt_ids=[5, 6, 7]))[-1]
    return done.stop_reason in ("eos", "max_new_tokens") and cache.loads[(spec, "cpu", "auto")] == loads


def test_lru_bounded_by_memory_keeps_the_default_and_what_queued_runs_want():
    m = FakeMachine(ram=10e9, sizes={"default": 1e9, "a": 3e9, "b": 3e9, "c": 3e9, "huge": 20e9})
    queue = []                                        # the models of the runs waiting in the page's queue
    cache = m.build(queued=lambda: queue)
    cache.get("default", "cpu")
    cache.get("a", "cpu")
    cache.get("b", "cpu")                             # 1 + 3.3 + 3.3 fit in 10: nothing evicted
    assert set(k for k, *_ in cache.models) == {"default", "a", "b"}
    cache.get("a", "cpu")                             # a used last: b is the least recently used
    cache.get("c", "cpu")
    assert set(k for k, *_ in cache.models) == {"default", "a", "c"}

    queue += [("a", "cpu"), ("c", "cpu")]             # a run on a is queued, then one on c
    with pytest.raises(ValueError, match=r"^Not loaded: b needs ~3\.3 GB .* 3\.0 GB of RAM free: pick a smaller"):
        cache.get("b", "cpu")                         # only a or c could make room, and runs wait for them
    assert set(k for k, *_ in cache.models) == {"default", "a", "c"}
    queue.remove(("a", "cpu"))                        # the run on a started (and ended): c is still wanted
    cache.get("b", "cpu")
    assert set(k for k, *_ in cache.models) == {"default", "b", "c"}

    with pytest.raises(ValueError, match=r"needs ~22\.0 GB .* 3\.0 GB of RAM free \(and 3\.0 GB held by other "
                                         r"models it may evict\)"):
        cache.get("huge", "cpu")                      # refused without evicting anything
    assert set(k for k, *_ in cache.models) == {"default", "b", "c"}
    queue.clear()
    assert serves(cache) and cache.loads[("default", "cpu", "auto")] == 1


def test_refusals_leave_the_default_serving(huge_dir, online_hub, monkeypatch):
    monkeypatch.setenv("SPACE_ID", "someone/clasp")
    monkeypatch.setenv("CLASP_ALLOW_MODELS", f"org/*,{huge_dir}")
    monkeypatch.setenv("CLASP_MAX_DOWNLOAD_GB", "20")
    monkeypatch.setattr(fit, "free_memory", lambda device: 14e9)
    online_hub({"org/big-70b": ("abc123", BIG_FILES, None)})
    tiny = from_modules(tiny_llama(layers=2), name="default")
    real = load_model
    cache = ModelCache(Policy.from_env(None, PRESETS),
                       loader=lambda spec, **kw: tiny if spec == "default" else real(spec, **kw))
    cache.get("default", "cpu")
    for bad, said in [("other/model", "not offered on this Space"), ("org/big-70b", "over this app's cap of 20.0 GB"),
                      (str(huge_dir), "of RAM free: pick a smaller model, or float16 on a GPU")]:
        with pytest.raises(ValueError, match=said):
            cache.get(bad, "cpu")
        assert serves(cache) and list(cache.models) == [("default", "cpu", "auto")]


def test_a_run_that_waits_for_another_load_says_so():
    m = FakeMachine(ram=10e9, sizes={"default": 1e9, "a": 3e9})
    cache = m.build()
    m.go["a"] = threading.Event()
    t = threading.Thread(target=cache.get, args=("a", "cpu"))
    t.start()
    while cache.loading != "a":
        t.join(0.01)
    said = []
    waiter = threading.Thread(target=cache.get, args=("default", "cpu", said.append))
    waiter.start()
    m.go["a"].set()
    t.join(30)
    waiter.join(30)
    assert said[0] == "Waiting: a is loading for another run; this run starts after it…"
    assert set(cache.models) == {("a", "cpu", "auto"), ("default", "cpu", "auto")}


# ---- through the page: two visitors -----------------------------------------------------------
@pytest.mark.integration
def test_two_visitors_alternating_models_never_reload_the_default(app_url, tiny_dir, huge_dir, online_hub,
                                                                   monkeypatch, tmp_path):
    """On a Space that allows org/*: refusals reach the visitor and the default serves the next run;
    then visitor B alternates with A's default runs queued behind B's: the default never reloads."""
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    from tests.conftest import named, run_args
    from tests.test_loading import hub_cache
    from ui.serving.handlers import APP

    hub_cache(tmp_path, "org/tiny-llama", sorted(tiny_dir.iterdir()), rev="abc123")
    tiny_files = {f.name: f.stat().st_size for f in tiny_dir.iterdir()}
    online_hub({"org/tiny-llama": ("abc123", tiny_files, None), "org/big-70b": ("abc123", BIG_FILES, None)})
    monkeypatch.setenv("CLASP_MAX_DOWNLOAD_GB", "20")
    monkeypatch.setattr(fit, "free_memory", lambda device: 14e9)
    monkeypatch.setattr(APP.models, "policy", Policy(on_space=True, allow=("org/*", str(huge_dir)),
                                                     offered=APP.models.policy.offered))
    a, b = Client(app_url, verbose=False), Client(app_url, verbose=False)

    def run(client, model, M=8):
        return client.submit(**run_args("Say hi.", model=model, num_skip=M, loi=1, max_new_tokens=8),
                             api_name="/run")

    def done(job, model_name):
        out = named(job.result(timeout=300))
        assert out["status"].startswith("Done.") and model_name in out["status"], out["status"]
        return [str(named(o)["status"]) for o in job.outputs()]

    default = "SmolLM2-135M-Instruct (embedded"
    done(run(a, ""), default)
    key = APP.models.key("")
    loads = APP.models.loads[key]
    assert loads == 1
    for model, said in [("other/model", "Model 'other/model' is not offered on this Space"),
                        ("org/big-70b", r"Not downloaded: org/big-70b is 141\.0 GB .* cap of 20\.0 GB "
                                        r"\(CLASP_MAX_DOWNLOAD_GB\)"),
                        (str(huge_dir), r"Not loaded: llama-70b-shaped needs ~313\.1 GB .* 14\.0 GB of RAM free")]:
        with pytest.raises(AppError, match=said):
            run(b, model, M=1).result(timeout=300)
        done(run(a, ""), default)                       # the default still serves the next run

    for _ in range(2):                                  # B on another model, A's default run queued behind it
        job_b = run(b, "org/tiny-llama", M=1)
        job_a = run(a, "")
        done(job_b, "org/tiny-llama · L = 3")
        statuses = done(job_a, default)
        assert not any(st.startswith(("Loading", "Waiting", "Converting")) for st in statuses), statuses
    assert APP.models.loads[key] == loads                                  # never reloaded
    assert APP.models.loads[APP.models.key("org/tiny-llama")] == 1       # kept in the LRU, memory allowing
