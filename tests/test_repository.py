"""The repository itself, read without a clone or a model (test_fresh_clone.py clones it and runs there)."""
import subprocess

from tests.conftest import ROOT


def test_nothing_tracked_points_outside_the_repository():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    needles = ("../" + "shared", 'parent / "' + 'shared"')       # spelled apart so this file does not match itself
    bad = []
    for name in files:
        path = ROOT / name
        if path.suffix not in {".py", ".md", ".toml", ".txt", ".cfg", ".sh", ""} or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if any(n in text for n in needles):
            bad.append(name)
    assert bad == [], f"tracked files refer to a folder beside the repository: {bad}"
