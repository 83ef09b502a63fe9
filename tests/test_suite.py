"""The test suite itself: a run leaves nothing behind in the temporary folder but pytest's own
(rotated) `pytest-of-*` folder and torch's fixed-name cache. The shared encoder-graph cache is ~200 MB once a test exports a
graph, so one leaked folder per run fills a CI disk."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_a_test_run_removes_the_folders_it_made(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "RAG_GRAPH_CACHE"} | {"TMPDIR": str(scratch)}
    # the session-scoped encoder fixture and the graph cache are made by this one quick test
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_encoder.py::test_padding_does_not_change_a_vector"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "1 passed" in run.stdout
    # torch's compile cache has a fixed name per user (`torchinductor_<user>`), reused by every run
    kept = ("pytest-of-", "torchinductor_")
    left = sorted(p.name for p in scratch.iterdir() if not p.name.startswith(kept))
    assert left == [], left
