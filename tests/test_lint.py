"""The code passes the project's ruff rules (`[tool.ruff]` in pyproject.toml): pyflakes,
pycodestyle, import order, pyupgrade and bugbear; `make lint` runs the same check."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_ruff_finds_nothing() -> None:
    run = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-2000:]
