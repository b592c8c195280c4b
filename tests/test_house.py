"""The house rules of docs/design.md section 1, checked on the source: the import rule between the rooms of
``realtime/``, no import cycles, ``engines/`` independent of ``realtime/``, and the size limits of modules and functions."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"config", "errors", "geometry", "files", "styles", "assets"}
ROOMS = {"io", "vision", "diffusion", "pipeline", "cli", "bench", "research", "panel"}
#: room -> the rooms it may import (besides the roots and itself)
ALLOWED = {
    "root": set(),
    "io": set(),
    "vision": set(),
    "diffusion": set(),
    "pipeline": {"io", "vision", "diffusion"},
    "bench": {"io", "vision", "diffusion", "pipeline"},
    "research": {"io", "vision", "diffusion", "pipeline"},
    "panel": {"io", "vision", "diffusion", "pipeline"},
    "cli": {"io", "vision", "diffusion", "pipeline", "bench", "research", "panel"},
}
ENGINE_USERS = {"diffusion", "cli", "bench"}
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 500, 80


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(package: str) -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((REPO / package).rglob("*.py"))}


def _imports(path: Path, name: str) -> set[str]:
    """Every module ``path`` imports, at module level or inside functions (absolute names)."""
    out: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import module`
    return out


def _room(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in ROOTS or parts[1] not in ROOMS:
        return "root"
    return parts[1]


def _graph() -> dict[str, set[str]]:
    mods = _modules("realtime") | _modules("engines")
    return {name: {m for m in _imports(path, name) if m in mods and m != name} for name, path in mods.items()}


def test_every_module_is_in_a_room_or_a_root():
    strays = [m for m in _modules("realtime") if m.count(".") == 1 and m.split(".")[1] not in ROOTS | ROOMS]
    assert strays == [], f"modules outside the rooms and roots of docs/design.md: {strays}"


def test_import_rule():
    violations = []
    for module, deps in _graph().items():
        if module.startswith("engines"):
            violations += [f"{module} -> {d} (engines/ imports nothing from realtime/)" for d in deps if d.startswith("realtime")]
            continue
        room = _room(module)
        for dep in deps:
            if dep.startswith("engines"):
                if room not in ENGINE_USERS:
                    violations.append(f"{module} -> {dep} (only {', '.join(sorted(ENGINE_USERS))} import engines)")
                continue
            target = _room(dep)
            if dep == "realtime" or target == "root" or target == room or target in ALLOWED[room]:
                continue
            violations.append(f"{module} ({room}) -> {dep} ({target})")
    assert violations == [], "import rule broken:\n" + "\n".join(sorted(violations))


def test_no_import_cycles():
    graph = _graph()
    for pkg in [m for m in graph if m.endswith("__init__") or "." not in m or m.split(".")[-1] in ROOMS]:
        graph[pkg] = set()  # a package's __init__ importing its own modules is not a cycle through them
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == [], "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("package", ["realtime", "engines"])
def test_module_and_function_sizes(package):
    too_long = []
    for name, path in _modules(package).items():
        text = path.read_text(encoding="utf-8")
        lines = text.count("\n")
        if lines > MAX_MODULE_LINES:
            too_long.append(f"{name}: {lines} lines (at most {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}.{node.name}: {length} lines (at most {MAX_FUNCTION_LINES})")
    assert too_long == [], "\n".join(too_long)


def test_design_doc_names_code_that_exists():
    """docs/design.md names code as ``path.py:Name`` or ``path.py:Class.method``: each must exist (the doc stays true)."""
    text = (REPO / "docs" / "design.md").read_text(encoding="utf-8")
    missing = []
    for path, dotted in sorted(set(re.findall(r"`?((?:realtime|engines)/[\w/]+\.py):([A-Za-z_][\w.]*)", text))):
        file = REPO / path
        if not file.is_file():
            missing.append(f"{path} (no such file)")
            continue
        tree = ast.parse(file.read_text(encoding="utf-8"))
        scope: list[ast.AST] = list(tree.body)
        for part in dotted.split("."):
            found = [n for n in scope if getattr(n, "name", None) == part
                     or (isinstance(n, ast.Assign) and any(getattr(t, "id", None) == part for t in n.targets))]
            if not found:
                missing.append(f"{path}:{dotted}")
                break
            scope = list(getattr(found[0], "body", []))
    assert missing == [], "docs/design.md names code that does not exist:\n" + "\n".join(missing)


def test_ruff_finds_nothing():
    """``ruff check`` with the rules of pyproject.toml (pyflakes, syntax errors, bugbear) over the whole tree."""
    import shutil
    import subprocess

    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (it comes with the dev extra: pip install -e '.[dev]')")
    r = subprocess.run([ruff, "check", "--no-cache", "realtime", "engines", "scripts", "benchmarks", "tests"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
