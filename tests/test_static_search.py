"""The offline skip-set search of the `static` strategy (tiny random Llamas, a temporary cache dir)."""
import ast
import re

import pytest
import torch

from clasp_core.model import from_modules
from clasp_core.runner import Runner
from clasp_core.static_search import Calibration, calibration_ids, continue_greedy, static_skip_set
from tests.conftest import ROOT, tiny_llama


@pytest.fixture
def lm(tmp_path, monkeypatch):
    monkeypatch.setenv("CLASP_CACHE", str(tmp_path))        # never the real model cache
    return from_modules(tiny_llama(layers=6), name="tiny-llama")


def test_search_returns_m_sorted_layers_then_reads_its_cache(lm, tmp_path):
    found = static_skip_set(lm, 3)
    assert len(found.skip) == 3 == len(set(found.skip)) and found.skip == sorted(found.skip)
    assert all(0 <= i < 6 for i in found.skip) and 0.0 <= found.score <= 1.0
    assert not found.cached and found.seconds > 0 and "greedy" in found.how
    assert 6 <= int(re.search(r"(\d+) scored sets", found.how)[1]) <= 6 + 5 + 4   # lazy: at most plain greedy's
    again = static_skip_set(lm, 3)
    assert again.cached and again.seconds == 0.0 and again.skip == found.skip and again.how == found.how
    assert len(list((tmp_path / "static").glob("*-M3.json"))) == 1
    assert static_skip_set(lm, 0).skip == []


@pytest.mark.parametrize("M", [6, -1, 2.5, True])
def test_bad_m_raises(lm, M):
    with pytest.raises(ValueError, match="M must be"):
        static_skip_set(lm, M)


def test_scored_rows_are_draft_steps_over_the_full_models_cache(lm):
    """Independently: the full model prefills the sequence up to p, then one draft step at p with the skip set."""
    cal = Calibration(lm)
    assert cal.score(cal.states(set())[-1])[0] == 1.0           # no skip: the full model's own tokens
    skip = {1, 4}
    rows = cal.r.head(cal.r.norm(cal.states(skip)[-1]))[0]
    prompts = calibration_ids(lm)
    for j in (0, len(prompts) - 1):                             # the first and the last sequence
        seq, n = continue_greedy(Runner(lm.model), prompts[j], set(lm.eos_ids))
        offset = 0 if j == 0 else len(cal.targets) - (len(seq) - n)   # rows follow the sequences' order
        ref = Runner(lm.model, capacity=64)
        for k in (0, len(seq) - n - 1):
            p = n - 1 + k
            ref.forward(torch.tensor(seq[:p]), 0)
            draft = ref.forward(torch.tensor(seq[p:p + 1]), p, skip=skip)[0]
            torch.testing.assert_close(rows[offset + k], draft, rtol=1e-4, atol=1e-4)


def test_lazy_search_finds_the_plain_greedy_sets(lm):
    """Plain greedy written out: at each step score every remaining layer from scratch."""
    cal = Calibration(lm)
    skip = set()
    for M in (1, 2, 3):
        skip.add(max((l for l in range(6) if l not in skip), key=lambda l: cal.score(cal.states(skip | {l})[-1])))
        assert static_skip_set(lm, M).skip == sorted(skip)


def test_one_search_answers_every_smaller_m_and_shipped_sets_are_read(lm, tmp_path, monkeypatch):
    import json

    import clasp_core.static_search as ss

    three = static_skip_set(lm, 3)
    one, two = static_skip_set(lm, 1), static_skip_set(lm, 2)
    assert one.cached and two.cached                              # saved on the way to M = 3
    assert set(one.skip) < set(two.skip) < set(three.skip)        # greedy sets are nested
    # a set shipped with the package is used when the user's cache has none
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    path = ss.cache_path(lm, 4)
    path.with_name("x").parent.mkdir(parents=True, exist_ok=True)
    (shipped / path.name).write_text(json.dumps(dict(skip=[0, 1, 2, 3], M=4, score=0.5, seconds=9.0,
                                                     how="shipped")))
    monkeypatch.setattr(ss, "SHIPPED", shipped)
    got = static_skip_set(lm, 4)
    assert got.cached and got.skip == [0, 1, 2, 3] and got.how == "shipped" and got.seconds == 0.0


@pytest.mark.integration
def test_the_embedded_models_sets_ship_with_the_package(embedded):
    """Searched ahead (one search to M = 20 on the embedded model): a `static` run starts at once. If the
    search or its calibration changes, the cache key changes and this fails: search again and re-ship."""
    for M in (8, 14, 20):
        found = static_skip_set(embedded, M)
        assert found.cached and found.seconds == 0.0 and len(found.skip) == M
        assert "greedy search" in found.how
    assert set(static_skip_set(embedded, 8).skip) < set(static_skip_set(embedded, 14).skip)


def engine_imports() -> dict[str, set[str]]:
    """Each clasp_core module and the clasp_core modules it imports, those inside functions included.
    ``from . import x`` and ``from clasp_core import x`` import the module ``x`` where there is one."""
    files = {".".join(p for p in path.relative_to(ROOT).with_suffix("").parts if p != "__init__"): path
             for path in (ROOT / "clasp_core").rglob("*.py")}
    graph = {}
    for name, path in files.items():
        package = name.split(".") if path.stem == "__init__" else name.split(".")[:-1]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
                elif (node.module or "").startswith("clasp_core"):
                    base = node.module
                else:
                    continue
                subs = {f"{base}.{a.name}" for a in node.names} & files.keys()
                deps |= subs or {base}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("clasp_core")}
        graph[name] = deps - {name}
    return graph


def test_the_engine_has_no_import_cycle():
    """The static search encodes its calibration prompts with clasp_core.prompt, not with decoding (which
    imports the strategies, which import the static search): no module may import itself round about."""
    graph = engine_imports()
    assert "clasp_core.prompt" in graph["clasp_core.static_search"]
    assert "clasp_core.cpu_kernel" in graph["clasp_core.backends.cpu"]     # `from .. import cpu_kernel`
    state = {}

    def visit(mod: str, path: list[str]) -> None:
        state[mod] = "open"
        for dep in sorted(graph.get(mod, ())):
            assert state.get(dep) != "open", f"import cycle: {' -> '.join(path + [dep])}"
            if dep in graph and dep not in state:
                visit(dep, path + [dep])
        state[mod] = "done"

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [mod])
