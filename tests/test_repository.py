"""The repository itself, read without a clone or a model (test_fresh_clone.py clones it and runs there)."""
import ast
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


def imported_modules(path) -> set[str]:
    """The modules a file imports, those inside functions included, relative imports made absolute."""
    package = list(path.relative_to(ROOT).with_suffix("").parts)[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            names.add(".".join(base + ([node.module] if node.module else [])))
    return names


def test_ui_has_its_three_rooms_and_never_imports_app():
    """Views, the server side and the bench tools each in a folder of their own; only the page sits beside
    them. The app imports ui, never the other way round."""
    ui = ROOT / "ui"
    rooms = {p.name for p in ui.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert rooms == {"views", "serving", "bench"}
    assert {p.name for p in ui.glob("*.py")} == {"__init__.py", "page.py"}
    upward = {str(p.relative_to(ROOT)) for p in ui.rglob("*.py")
              if any(m == "app" or m.startswith("app.") for m in imported_modules(p))}
    assert upward == set(), f"ui imports app: {upward}"


def test_no_module_state_is_reassigned_through_global():
    files = [ROOT / "app.py", *(ROOT / "ui").rglob("*.py"), *(ROOT / "clasp_core").rglob("*.py")]
    found = [str(p.relative_to(ROOT)) for p in files
             if any(isinstance(node, ast.Global) for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))))]
    assert found == [], f"module state reassigned with `global` in {found}"
