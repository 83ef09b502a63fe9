"""PostgreSQL as the shared store, with real processes: two API servers read one database while a
third process ingests into it, and a second data home cannot write (or roll back) the first's
collection."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, select

from tests.conftest import SCIFACT, run_cli

pytestmark = pytest.mark.postgres


def _records(n: int, skip: int = 0) -> list[dict[str, str]]:
    out = []
    with (SCIFACT / "corpus.jsonl").open(encoding="utf-8") as handle:
        for i, line in enumerate(handle):
            if i >= skip:
                out.append(json.loads(line))
            if len(out) == n:
                break
    return out


def _write(folder: Path, records: list[dict[str, str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for r in records:
        (folder / f"{r['_id']}.txt").write_text(r["title"] + "\n\n" + r["text"], encoding="utf-8")


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _visible(url: str) -> dict[int, str]:
    """chunk id -> text of chunks visible in the published generation, straight from SQL."""
    from indexes.schema import ChunkRow, CollectionRow, DocumentRow, visible_at

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            generation = conn.execute(select(CollectionRow.generation).where(CollectionRow.name == "default")).scalar_one()
            rows = conn.execute(
                select(ChunkRow.id, ChunkRow.text).join(DocumentRow).where(visible_at(generation))
            ).all()
    finally:
        engine.dispose()
    return {int(i): t for i, t in rows}


def test_two_api_processes_read_one_postgres_database_while_a_third_ingests(tmp_path: Path, postgres_url: str) -> None:
    home = tmp_path / "home"
    env = {"RAG_DATABASE_URL": postgres_url, "RAG_BATCH_CHUNKS": "16", "RAG_THREADS": "1"}
    first, later = tmp_path / "first", tmp_path / "later"
    _write(first, _records(8))
    _write(later, _records(40, skip=8))
    done = run_cli("ingest", str(first), home=home, env=env)
    assert done.returncode == 0, done.stderr

    environment = {**os.environ, "RAG_HOME": str(home), "HF_HUB_OFFLINE": "1", **env}
    rag = shutil.which("rag", path=str(Path(sys.executable).parent)) or "rag"
    ports = [_port(), _port()]
    # Server output goes to files: a pipe nobody reads blocks a server once it fills (64 KiB).
    logs = [tmp_path / f"serve-{port}.log" for port in ports]
    servers = [
        subprocess.Popen(
            [rag, "serve", "--no-auth", "--port", str(port), "--log-level", "warning"],
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=log.open("wb"),
        )
        for port, log in zip(ports, logs)
    ]
    ingest = None
    try:
        clients = [httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) for port in ports]
        deadline = time.monotonic() + 180
        for client, server, log in zip(clients, servers, logs):
            while True:
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert server.poll() is None, f"server exited {server.returncode}: {log.read_text()[-2000:]}"
                assert time.monotonic() < deadline, f"server did not start: {log.read_text()[-2000:]}"
                time.sleep(0.5)
        ingest = subprocess.Popen([rag, "ingest", str(later)], env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        failures: list[str] = []
        searches = during = 0
        while ingest.poll() is None or searches < 4:
            during += ingest.poll() is None
            for client in clients:
                if client.get("/readyz").status_code != 200:
                    failures.append("readyz not 200 during the ingest")
                response = client.post("/v1/search", json={"query": "cells protein expression", "k": 10})
                if response.status_code != 200:
                    failures.append(f"search {response.status_code}: {response.text}")
                    continue
                visible = _visible(postgres_url)
                for passage in response.json()["passages"]:
                    # Hits come from a generation at or before the one SQL publishes now; chunk
                    # ids are never reused, so any hit still visible must carry SQL's text.
                    text = visible.get(passage["chunk_id"])
                    if text is not None and text != passage["text"]:
                        failures.append(f"chunk {passage['chunk_id']} text differs from SQL")
                searches += 1
        assert ingest.wait() == 0, ingest.stderr.read().decode() if ingest.stderr else ""
        assert not failures, failures[:5]
        assert during > 0, "the ingest ended before any search overlapped it"
        # Both servers now see what the third process wrote.
        record = _records(1, skip=30)[0]
        for client in clients:
            hits = client.post("/v1/search", json={"query": record["title"], "k": 3, "retriever": "bm25"}).json()["passages"]
            assert hits[0]["source"].endswith(f"{record['_id']}.txt")
        for client in clients:
            client.close()
    finally:
        for process in servers + ([ingest] if ingest else []):
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=30)
    doctor = run_cli("doctor", "--check-only", "--json", home=home, env=env)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert json.loads(doctor.stdout)["before"]["sql_chunks"] > 0


def test_a_second_data_home_on_the_same_database_cannot_write_the_first_homes_collection(tmp_path: Path, postgres_url: str) -> None:
    env = {"RAG_DATABASE_URL": postgres_url}
    corpus = tmp_path / "corpus"
    _write(corpus, _records(4))
    assert run_cli("ingest", str(corpus), home=tmp_path / "a", env=env).returncode == 0
    other = tmp_path / "other"
    _write(other, _records(2, skip=10))
    refused = run_cli("ingest", str(other), home=tmp_path / "b", env=env)
    assert refused.returncode == 1 and "stored in another data home" in refused.stderr
    # Nothing of the first home's collection was touched, and the second home has its own.
    stats = json.loads(run_cli("stats", "--json", home=tmp_path / "a", env=env).stdout)
    assert stats["documents"] == 4
    assert run_cli("ingest", str(other), "-c", "mine", home=tmp_path / "b", env=env).returncode == 0
    assert run_cli("doctor", "--check-only", home=tmp_path / "a", env=env).returncode == 0
    assert run_cli("doctor", "--check-only", "-c", "mine", home=tmp_path / "b", env=env).returncode == 0
