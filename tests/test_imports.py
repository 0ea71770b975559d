"""The import rule: imports point down only, and no module imports itself back.

    {predict, demo, bench, gpu_check}  ->  {stages.extract, stages.train}  ->  pipeline

`pipeline` imports no stage (its command line, `pipeline.cli`, is the one exception: it
starts the stages); `stages.extract` and `stages.train` never import each other; neither
imports the modules above them. Imports inside functions count too: a lazy import that
closes a cycle is still a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOP = {"stages.predict", "stages.demo", "stages.bench", "stages.gpu_check"}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in ("pipeline", "stages") for p in sorted((REPO / pkg).rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules `name` imports, anywhere in the file (functions included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            t = target
            while t and t not in known:  # `from pkg import name`: name may be a module or an attribute
                t = t.rpartition(".")[0]
            # its own parent packages are loaded before it anyway: not a dependency that can cycle
            if t and t != name and not name.startswith(t + "."):
                found.add(t)
    return found


def graph() -> dict[str, set[str]]:
    mods = project_modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def layer(name: str) -> str:
    if name in TOP:
        return "top"
    for prefix in ("stages.extract", "stages.train"):
        if name == prefix or name.startswith(prefix + "."):
            return prefix
    return "pipeline" if name.startswith("pipeline") else "stages"


def test_imports_point_down_only():
    breaches = []
    for name, targets in graph().items():
        for t in targets:
            src, dst = layer(name), layer(t)
            if src == "pipeline" and dst != "pipeline" and name != "pipeline.cli":
                breaches.append(f"{name} -> {t}: the shared core imports a stage")
            if {src, dst} == {"stages.extract", "stages.train"}:
                breaches.append(f"{name} -> {t}: the two stages import each other")
            if src in ("stages.extract", "stages.train") and dst == "top":
                breaches.append(f"{name} -> {t}: a stage imports a module that sits on top of it")
    assert not breaches, "\n".join(breaches)


def test_no_import_cycles():
    g = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []
    cycles = []

    def visit(n: str) -> None:
        state[n] = 1
        path.append(n)
        for m in sorted(g[n]):
            if state.get(m) == 1:
                cycles.append(" -> ".join(path[path.index(m) :] + [m]))
            elif m not in state:
                visit(m)
        path.pop()
        state[n] = 2

    for n in sorted(g):
        if n not in state:
            visit(n)
    assert not cycles, "\n".join(cycles)


@pytest.mark.parametrize("name", ["stages.extract", "stages.train", "stages.extract.runner", "pipeline.store"])
def test_the_scan_sees_real_imports(name):
    """Guard against a scan that finds nothing and so passes for the wrong reason."""
    assert graph()[name], f"no project import found in {name}"
