"""A user's `git clone` has nothing beside it: the suite and the bench must need nothing outside the repository.

The clone is of the committed HEAD (CI runs on a clean clone of main, so there it is the code under test).
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.heavy]


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("empty")          # an empty folder: no shared/ folder beside the clone
    dest = home / "clasp"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(dest)], check=True)
    assert sorted(p.name for p in home.iterdir()) == ["clasp"]
    return dest


def run_in(clone: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["PYTHONPATH"] = str(clone)                   # the clone's code, not an editable install elsewhere
    return subprocess.run([sys.executable, *args], cwd=clone, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_the_clone_imports_its_own_code(clone):
    out = run_in(clone, "-c", "import clasp_core, ui; print(clasp_core.__file__); print(ui.__file__)")
    assert out.returncode == 0, out.stderr
    assert all(Path(line).resolve().is_relative_to(clone.resolve()) for line in out.stdout.split())


def test_the_whole_suite_collects_in_a_bare_clone(clone):
    out = run_in(clone, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    collected = [ln for ln in out.stdout.splitlines() if "::" in ln]
    assert len(collected) > 50, out.stdout[-2000:]
    assert "error" not in out.stdout.splitlines()[-1].lower(), out.stdout[-2000:]


def test_the_bench_runs_in_a_bare_clone_on_its_shipped_questions(clone, tmp_path):
    res = tmp_path / "r.jsonl"
    out = run_in(clone, "-m", "clasp_core.bench", "--max-new-tokens", "4", "--limit", "1", "--methods", "vanilla",
                 "--device", "cpu", "--dtype", "float32", "--out", str(res))
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "| overall | vanilla |" in out.stdout
    assert res.read_text().count("\n") == 1
