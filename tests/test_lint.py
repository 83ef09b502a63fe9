"""The code passes the project's static checks, configured in pyproject.toml: ruff (pyflakes,
pycodestyle, import order, pyupgrade, bugbear) and mypy (every function of ours typed, bodies
checked). `make lint` runs the same two commands."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_ruff_finds_nothing() -> None:
    run = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-2000:]


def test_mypy_finds_nothing() -> None:
    # ~15 s on a clean clone (2 cores; torch, transformers and the runtimes are not read: pyproject), ~1 s cached
    run = subprocess.run([sys.executable, "-m", "mypy"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-2000:]


def _import_cycle(package: str) -> list[str]:
    """A cycle among `package`'s modules (imports inside functions count too), or []."""
    import ast

    folder = REPO / package
    graph: dict[str, set[str]] = {}
    for path in folder.glob("*.py"):
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            found.update(n.split(".")[1] for n in names if n.startswith(package + ".") and (folder / f"{n.split('.')[1]}.py").exists())
        graph[path.stem] = found - {path.stem}

    def visit(module: str, trail: list[str]) -> list[str]:
        if module in trail:
            return trail[trail.index(module) :] + [module]
        for child in sorted(graph.get(module, ())):
            cycle = visit(child, trail + [module])
            if cycle:
                return cycle
        return []

    for module in sorted(graph):
        cycle = visit(module, [])
        if cycle:
            return cycle
    return []


def test_ingest_modules_import_each_other_in_one_direction() -> None:
    assert _import_cycle("ingest") == []
