"""A crash at any moment of an ingest leaves a store that opens, keeps what was fully ingested
before, and completes when the same ingest runs again."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from indexes.store import Store
from tests.conftest import SCIFACT, run_cli


def _write_corpus(folder: Path, records: list[dict[str, str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for record in records:
        (folder / f"{record['_id']}.txt").write_text(record["title"] + "\n\n" + record["text"], encoding="utf-8")


def _scifact(n: int, skip: int = 0) -> list[dict[str, str]]:
    records = []
    with (SCIFACT / "corpus.jsonl").open(encoding="utf-8") as handle:
        for i, line in enumerate(handle):
            if i >= skip:
                records.append(json.loads(line))
            if len(records) == n:
                break
    return records


def _ready_state(home: Path) -> dict[str, str]:
    """source -> content hash of visible documents, read straight from SQL by a reader that
    recovers nothing; a source visible twice fails here (counts compared, not a dict alone)."""
    from sqlalchemy import select

    from indexes.schema import DocumentRow, visible_at

    store = Store(home)
    try:
        if "default" not in store.collection_names():
            return {}
        collection = store.collection("default")
        generation = collection.snapshot().generation  # one generation for both reads
        with store.sessions() as session:
            rows = session.execute(
                select(DocumentRow.source, DocumentRow.content_hash).where(
                    DocumentRow.collection_id == collection.id, visible_at(generation)
                )
            ).all()
        state = {source: digest for source, digest in rows}
        visible = len(rows)
        assert visible == len(state), f"{visible} visible documents for {len(state)} sources: duplicates"
        return state
    finally:
        store.close()


def _reader_sees_a_consistent_store(home: Path) -> bool:
    """A reader that did not recover anything: the published generation must already agree."""
    store = Store(home)
    try:
        return store.collection("default").check().consistent
    finally:
        store.close()


def _consistent_after_open(home: Path) -> bool:
    """What any later writer does on open: roll back, then compare id by id."""
    assert _reader_sees_a_consistent_store(home)
    store = Store(home)
    try:
        collection = store.collection("default")
        with collection.writer():
            pass
        leftovers = [p.name for p in collection.folder.iterdir() if p.name.endswith(".tmp")]
        assert not leftovers, leftovers
        return collection.check().consistent and collection.check().unpublished_documents == 0
    finally:
        store.close()


@pytest.mark.parametrize(
    "failpoint",
    ["write:after-pending", "faiss:before-rename", "write:after-faiss-save", "recover:after-rollback"],
)
def test_a_crash_at_each_step_of_a_write_loses_nothing_and_the_rerun_completes(tmp_path: Path, failpoint: str) -> None:
    corpus = tmp_path / "corpus"
    _write_corpus(corpus, _scifact(6))
    home = tmp_path / "home"
    assert run_cli("ingest", str(corpus), home=home).returncode == 0
    before = _ready_state(home)
    # Change one file, add one: the next ingest replaces and adds.
    changed = next(iter(sorted(corpus.glob("*.txt"))))
    changed.write_text("A completely rewritten abstract about zebrafish fin regeneration.", encoding="utf-8")
    _write_corpus(corpus, _scifact(1, skip=10))
    if failpoint == "recover:after-rollback":
        # Recovery itself crashing needs something to recover: crash a write first.
        crashed = run_cli("ingest", str(corpus), home=home, env={"RAG_FAILPOINT": "write:after-faiss-save"})
        assert crashed.returncode == 137
    crashed = run_cli("ingest", str(corpus), home=home, env={"RAG_FAILPOINT": failpoint})
    assert crashed.returncode == 137, crashed.stderr

    # The store opens, searches, and still holds every document of the first ingest in its old
    # version: nothing of a batch is visible before the batch is published.
    assert _reader_sees_a_consistent_store(home)
    searched = run_cli("search", "fin regeneration", "--json", home=home)
    assert searched.returncode == 0, searched.stderr
    after = _ready_state(home)
    assert set(before) <= set(after)
    assert all(after[source] == digest for source, digest in before.items())
    assert _consistent_after_open(home)

    rerun = run_cli("ingest", str(corpus), "--json", home=home)
    assert rerun.returncode == 0, rerun.stderr
    final = _ready_state(home)
    assert len(final) == 7
    assert final[str(changed.resolve())] != before[str(changed.resolve())]
    assert run_cli("doctor", "--check-only", home=home).returncode == 0
    runs = json.loads(run_cli("stats", "--json", home=home).stdout)["last_run"]
    assert runs["status"] == "completed"


def test_kill_9_at_random_moments_of_a_long_ingest(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    records = _scifact(400)  # ~900 chunks: seconds of embedding even with a bf16 encoder, so a kill can land mid-ingest
    _write_corpus(corpus, records)
    home = tmp_path / "home"
    env = {**os.environ, "RAG_HOME": str(home), "RAG_BATCH_CHUNKS": "8", "HF_HUB_OFFLINE": "1"}
    rag = str(Path(sys.executable).parent / "rag")
    previous: set[str] = set()
    rng = random.Random(0)
    partial_seen = False
    for _ in range(3):
        process = subprocess.Popen([rag, "ingest", str(corpus)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Kill at a random moment once this run has written a batch (model loading time varies).
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None and len(_ready_state(home)) <= len(previous):
            time.sleep(0.2)
        time.sleep(rng.uniform(0.0, 1.0))
        process.send_signal(signal.SIGKILL)
        process.wait()
        state = set(_ready_state(home))
        assert previous <= state, "a document that was fully ingested before the kill is gone"
        assert _consistent_after_open(home)
        previous = state
        partial_seen = partial_seen or 0 < len(state) < len(records)
    assert partial_seen, "no kill landed in the middle of the ingest; the test proved nothing"
    done = run_cli("ingest", str(corpus), "--json", home=home)
    assert done.returncode == 0, done.stderr
    assert len(_ready_state(home)) == len(records)
    doctor = run_cli("doctor", "--check-only", "--json", home=home)
    assert doctor.returncode == 0
    assert json.loads(doctor.stdout)["before"]["consistent"]
