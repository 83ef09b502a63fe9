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
