"""The import rule: imports point down only, and no module imports itself back.

    {cli, predict, demo, bench, gpu_check, zeroshot, export, localize_sample}  ->  {stages.extract, stages.train}  ->  pipeline
                                         stages.samples (the sample dataset, bench clips)  ->  pipeline

`pipeline` imports no stage, not even inside a function; `stages.extract` and
`stages.train` never import each other; neither imports the modules above them;
`stages.samples` imports the core only; `stages.localize` (stage two's side, for untrimmed
videos) imports the core and `stages.train`, never `stages.extract`, and no stage imports it.
Imports inside functions count too: a lazy import that closes a cycle is still a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOP = {
    "stages.cli",
    "stages.__main__",
    "stages.predict",
    "stages.demo",
    "stages.bench",
    "stages.gpu_check",
    "stages.zeroshot",
    "stages.export",
    "stages.localize_sample",
}


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
    if any(name == top or name.startswith(top + ".") for top in TOP):  # stages.bench is a package
        return "top"
    for prefix in ("stages.extract", "stages.train", "stages.samples", "stages.localize"):
        if name == prefix or name.startswith(prefix + "."):
            return prefix
    return "pipeline" if name.startswith("pipeline") else "stages"


def test_imports_point_down_only():
    breaches = []
    for name, targets in graph().items():
        for t in targets:
            src, dst = layer(name), layer(t)
            if src == "pipeline" and dst != "pipeline":
                breaches.append(f"{name} -> {t}: the shared core imports a stage")
            if {src, dst} == {"stages.extract", "stages.train"}:
                breaches.append(f"{name} -> {t}: the two stages import each other")
            if src == "stages.samples" and dst not in ("pipeline", "stages.samples"):
                breaches.append(f"{name} -> {t}: the generators import more than the core")
            if src == "stages.localize" and dst == "stages.extract":
                breaches.append(f"{name} -> {t}: localization (stage two's side) imports stage one")
            if src in ("stages.extract", "stages.train") and dst == "stages.localize":
                breaches.append(f"{name} -> {t}: a stage imports localization, which sits on stage two")
            if src in ("stages.extract", "stages.train", "stages.localize") and dst == "top":
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


@pytest.mark.parametrize(
    "name", ["stages.extract.entry_points", "stages.train.trainer", "stages.extract.runner", "pipeline.store"]
)
def test_the_scan_sees_real_imports(name):
    """Guard against a scan that finds nothing and so passes for the wrong reason."""
    assert graph()[name], f"no project import found in {name}"


def test_the_core_has_no_command_line_of_its_own():
    """`python -m pipeline` names the command line instead of running one (the core imports no stage)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "pipeline"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 1 and "`vidstore ...` (or `python -m stages ...`)" in done.stderr
