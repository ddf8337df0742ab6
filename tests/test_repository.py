"""The repository itself, read without a clone or a model (test_fresh_clone.py clones it and runs there)."""
import ast
import re
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



def anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def chapters(text: str, level: str = "#+") -> dict[str, str]:
    """Each heading's anchor -> the text under it (for level "##": with its subsections)."""
    parts = re.split(rf"^{level} (.*)$", text, flags=re.M)
    return {anchor(h): body for h, body in zip(parts[1::2], parts[2::2])}


def test_the_docs_links_resolve():
    """Every link of README.md and BENCHMARKS.md to a file or a heading of ours finds it."""
    docs = {name: (ROOT / name).read_text(encoding="utf-8") for name in ("README.md", "BENCHMARKS.md")}
    bad = []
    for name, text in docs.items():
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith("http"):
                continue
            path, _, frag = target.partition("#")
            if (path and not (ROOT / path).exists()) or (frag and frag not in chapters(docs.get(path or name, ""))):
                bad.append(f"{name}: {target}")
    assert bad == []


def test_benchmarks_gives_each_command_its_table():
    """BENCHMARKS.md is a reference: each command its contents list names has a chapter with the
    command and a table (Markdown, or as the command prints it); older sittings are left to git history."""
    text = (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8")
    contents = text.split("\n## ")[0]
    listed = re.findall(r"\]\(#([^)]+)\) \(`([^`]+)`", contents)
    assert len(listed) >= 7
    found = chapters(text, "##")
    for frag, command in listed:
        assert command in found[frag], (frag, command)
        assert re.search(r"^\s*\|---|^```\n.*\d", found[frag], flags=re.M), f"no table under {frag}"
    assert "git log -p BENCHMARKS.md" in contents


def test_the_readme_keeps_the_section_the_engine_points_to():
    """The CPU kernel's notice on stderr and on the page says "(README, CPU)"."""
    assert "cpu" in chapters((ROOT / "README.md").read_text(encoding="utf-8"), "##")
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
