"""`rag ingest --ray` against a real Ray cluster on loopback (`ray start --head`, 2 CPUs).

The distributed ingest must give what a single-process ingest gives (same chunks, vectors within
1e-5, same search results), survive a worker killed mid-run with every document written once,
stay incremental, and leave `rag doctor` clean.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import ray  # noqa: F401  (the `rag[ray]` extra, installed with dev: missing, the suite fails)

from bench.scale import start_head, stop_head
from rag.runtime import Runtime
from rag.settings import Settings
from tests.conftest import SCIFACT, run_cli_importing_none_of

RECORDS = 100
RAG = [sys.executable, "-m", "cli"]
QUERIES = [
    "0-dimensional biomaterials show inductive properties.",
    "ALDH1 expression is associated with poorer prognosis for breast cancer primary tumors.",
    "Vitamin D deficiency effects the term of delivery.",
    "Macrophages are recruited to sites of inflammation.",
    "DNA methylation changes with age.",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first RECORDS SciFact abstracts as one BEIR JSONL file."""
    path = tmp_path_factory.mktemp("corpus") / "scifact.jsonl"
    with (SCIFACT / "corpus.jsonl").open(encoding="utf-8") as source:
        path.write_text("".join(next(source) for _ in range(RECORDS)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A Ray head node with 2 CPUs on loopback, with its own auth token (never ~/.ray's) in the
    environment this test and its `rag` subprocesses share; stopped with everything it started."""
    head, address, env, temp = start_head(2)
    saved = {name: os.environ.get(name) for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}
    os.environ.update({name: env[name] for name in saved})
    try:
        yield address
    finally:
        stop_head(head, temp)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="module")
def single(corpus: Path, tmp_path_factory: pytest.TempPathFactory, encoder) -> Runtime:  # type: ignore[no-untyped-def]
    """The reference: the same file ingested in this process, without Ray."""
    runtime = Runtime(Settings(home=tmp_path_factory.mktemp("single"), encoder_runtime=REFERENCE_RUNTIME))
    report = runtime.ingestor(runtime.writable_collection("c")).ingest_paths([str(corpus)])
    assert (report.documents_added, report.errors) == (RECORDS, [])
    return runtime


# Both ingests embed with the fp32 reference runtime: its vectors do not depend on a text's batch
# neighbours (< 1e-5), so "identical to a single-process ingest" can be checked to 1e-5. Under
# OpenVINO bf16 (what `auto` picks on an AMX CPU) a vector moves by up to ~6e-4 with the batch
# it is padded with, and Ray batches differently from one process.
REFERENCE_RUNTIME = "torch"


def _env(home: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "RAG_HOME": str(home), "RAG_COLLECTION": "c", "RAG_ENCODER_RUNTIME": REFERENCE_RUNTIME, **extra}


def _snapshot(runtime: Runtime) -> dict[tuple[str, int], tuple[str, int, int, np.ndarray]]:
    """(record id, ordinal) -> (text, start, end, vector) for every chunk of the collection."""
    collection = runtime.collection("c")
    ids = collection.snapshot().vector_ids()
    rows = collection.passage_rows(ids.tolist())
    assert len(rows) == len(ids)
    vectors = collection.stored_vectors(ids.tolist())
    return {(_record(row[6]), row[5]): (row[2], row[3], row[4], vectors[chunk_id]) for chunk_id, row in rows.items()}


def _record(source: str) -> str:
    return source.rsplit("#", 1)[1]


def _embedder_pids() -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"Embedder" in (entry / "cmdline").read_bytes():
                    found.add(int(entry.name))
            except OSError:
                continue
    return found


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_plain_ingest_does_not_import_ray(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("Ray is only imported when asked for.", encoding="utf-8")
    done = run_cli_importing_none_of({"ray"}, "ingest", str(tmp_path / "a.txt"), "--json", env=_env(tmp_path / "h"))
    assert done.returncode == 0, done.stderr
    assert '"documents_added": 1' in done.stdout


def test_an_embedding_actor_loads_the_encoder_a_single_process_loads(tmp_path: Path) -> None:
    """RAG_PRECISION and RAG_ENCODER_RUNTIME mean the same in a Ray actor as in `rag ingest`: the
    actor's encoder (built here as each actor builds it, without a cluster) runs what the runtime's does."""
    from indexes.config import CollectionConfig
    from ingest.distributed import Embedder, WorkerConfig
    from ingest.loaders import InputLimits

    settings = Settings(home=tmp_path, device="cpu", encoder_runtime="torch", precision="bfloat16")
    runtime = Runtime(settings)
    spec = runtime.requested_spec()
    single = runtime.encoder(spec)
    actor = Embedder(
        WorkerConfig(CollectionConfig(spec, 384), InputLimits(), encoder_runtime="torch", precision="bfloat16"), "cpu", 1
    )
    assert actor.encoder.describe() == single.describe() == {
        "runtime": "torch", "device": "cpu", "quantized": False, "dtype": "bfloat16"
    }


def test_ray_ingest_survives_a_killed_worker_and_equals_a_single_process_ingest(
    cluster: str, corpus: Path, single: Runtime, tmp_path: Path
) -> None:
    home = tmp_path / "ray"
    corpus = Path(shutil.copy(corpus, tmp_path / "scifact.jsonl"))
    # Small embedding calls and write batches: a killed actor loses one call, the driver writes often.
    env = _env(home, RAG_BATCH_CHUNKS="64", RAG_RAY_BATCH_SIZE="8")
    run = subprocess.Popen(
        [*RAG, "ingest", str(corpus), "--ray-address", cluster, "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    killed: int | None = None
    restarted: set[int] = set()
    deadline = time.monotonic() + 300
    while run.poll() is None and time.monotonic() < deadline:
        if killed is None:
            # Kill the embedding actor once it has spent CPU on embedding (loading the encoder
            # takes ~1-2 s of CPU; the corpus ~15 s): its batch in flight must be redone.
            busy = [pid for pid in _embedder_pids() if _cpu_seconds(pid) >= 4.0]
            if busy:
                killed = busy[0]
                os.kill(killed, signal.SIGKILL)
        else:
            restarted |= _embedder_pids() - {killed}
        time.sleep(0.2)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 0, err[-3000:]
    assert killed is not None, "the run ended before the embedding actor could be killed mid-way"
    assert restarted, "Ray did not restart the killed embedding actor"
    report = json.loads(out)
    assert (report["documents_added"], report["errors"]) == (RECORDS, [])

    distributed = Runtime(Settings(home=home, encoder_runtime=REFERENCE_RUNTIME))
    expected, got = _snapshot(single), _snapshot(distributed)
    assert sorted(got) == sorted(expected)  # every chunk once, none lost, none duplicated
    for key, (text, start, end, vector) in expected.items():
        assert got[key][:3] == (text, start, end)
        assert np.abs(got[key][3] - vector).max() < 1e-5
    for retriever in ("dense", "hybrid"):
        for query in QUERIES:
            a = single.retriever("c", retriever).retrieve(query, 10)
            b = distributed.retriever("c", retriever).retrieve(query, 10)
            assert [(_record(p.source), p.ordinal) for p in a] == [(_record(p.source), p.ordinal) for p in b]
            assert np.allclose([p.score for p in a], [p.score for p in b], atol=1e-4)

    doctor = subprocess.run([*RAG, "doctor", "--check-only", "--json"], env=env, capture_output=True, text=True)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert json.loads(doctor.stdout)["before"]["sql_chunks"] == len(expected)

    # Incremental through Ray too: nothing changed -> nothing embedded; a record gone -> pruned.
    again = subprocess.run([*RAG, "ingest", str(corpus), "--ray-address", cluster, "--json"], env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (json.loads(again.stdout)["documents_unchanged"], json.loads(again.stdout)["chunks_added"]) == (RECORDS, 0)
    lines = corpus.read_text(encoding="utf-8").splitlines(keepends=True)
    corpus.write_text("".join(lines[:-1]), encoding="utf-8")
    pruned = subprocess.run([*RAG, "ingest", str(corpus), "--ray-address", cluster, "--json"], env=env, capture_output=True, text=True)
    assert pruned.returncode == 0, pruned.stderr[-3000:]
    found = json.loads(pruned.stdout)
    assert (found["documents_unchanged"], found["documents_deleted"], found["chunks_added"]) == (RECORDS - 1, 1, 0)
    assert distributed.collection("c").check().consistent
