"""A fresh clone with nothing beside it runs the demo: the reader and the verifier ship with the
repository, so no `../shared` (nor a hub) is needed to ingest, answer in both modes and refuse.

The clone reuses this checkout's virtualenv (torch and the rest are not reinstalled): its own code
is put first on PYTHONPATH, so `.venv/bin/rag` runs the clone, not this checkout.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # a clone, an ingest and four answers: a few minutes on two shared cores


def test_a_clone_with_no_shared_folder_beside_it_runs_the_demo(tmp_path: Path) -> None:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    clone = tmp_path / "nothing-beside" / "rag"
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(REPO), str(clone)], check=True, capture_output=True)
    subprocess.run(["git", "checkout", "-q", commit], cwd=clone, check=True, capture_output=True)
    assert sorted(p.name for p in clone.parent.iterdir()) == ["rag"]  # no ../shared
    (clone / ".venv").symlink_to((REPO / ".venv").resolve())
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RAG_") or k == "RAG_GRAPH_CACHE"  # the session's exported encoder graph, to save minutes
    }
    env.update(PYTHONPATH=str(clone), RAG_HOME=str(tmp_path / "home"), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    done = subprocess.run(["bash", "scripts/demo"], cwd=clone, env=env, capture_output=True, text=True, timeout=900)
    out = done.stdout
    assert done.returncode == 0, (done.stderr[-3000:], out[-3000:])
    asks = out.split("$ rag ask ")[1:]
    assert len(asks) == 4, out
    extractive, extractive_refused, generative, generative_refused = asks
    assert "\nWarsaw\n" in extractive and "marie-curie.md" in extractive
    assert "Not in the sources." in extractive_refused
    assert "answer: Pierre Curie was born in Paris" in generative and "✓ verified" in generative
    # the reader abstains: refused before anything is generated, so no draft is shown
    assert "\nNot in the sources.\n" in generative_refused and "draft" not in generative_refused
    assert "shared" not in done.stderr
