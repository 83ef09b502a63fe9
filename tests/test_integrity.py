"""Data integrity across processes: collection identities, failed writes, purges and recovery."""

from __future__ import annotations

import ast
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from indexes.errors import CollectionNotFound
from indexes.schema import DocumentRow
from indexes.store import Collection, CollectionConfig, NewDocument, Store
from indexes.types import Document
from ingest.chunking import SentenceWindowChunker
from ingest.pipeline import document_hash


def _config(encoder) -> CollectionConfig:  # type: ignore[no-untyped-def]
    return CollectionConfig(encoder=encoder.spec, dim=encoder.dim, chunk_tokens=16, chunk_overlap=4)


def _new(encoder, source: str, text: str) -> NewDocument:  # type: ignore[no-untyped-def]
    doc = Document(source=source, text=text, title=source)
    chunks = SentenceWindowChunker(encoder.tokenizer, 16, 4).split(text)
    return NewDocument(doc, document_hash(doc), chunks, encoder.encode([c.text for c in chunks]))


def test_a_stale_handle_never_reads_or_deletes_the_collection_that_replaced_it(tmp_path: Path, database_url: str, encoder) -> None:  # type: ignore[no-untyped-def]
    server = Store(tmp_path / "home", database_url)  # e.g. an API process
    cli = Store(tmp_path / "home", database_url)  # e.g. `rag collections delete` in another process
    public = server.create_collection("public", _config(encoder))
    with public.writer():
        public.write([_new(encoder, "pub", "A public note about the weather.")])
    assert [d["source"] for d in server.collection("public").documents()] == ["pub"]

    cli.drop_collection("public")
    secret = cli.create_collection("secret", _config(encoder))
    with secret.writer():
        secret.write([_new(encoder, "classified", "The launch code is 0000.")])
    secret_id = secret.documents()[0]["id"]

    with pytest.raises(CollectionNotFound, match="public"):
        server.collection("public")
    with pytest.raises(CollectionNotFound, match="public"):
        public.documents()
    with pytest.raises(CollectionNotFound, match="public"):
        public.document_text(secret_id)
    with pytest.raises(CollectionNotFound, match="public"):
        public.find_documents(secret_id, by="id")
    with pytest.raises(CollectionNotFound, match="public"):
        public.snapshot()
    stale_writer = Collection(public.store, public.id, public.name, public.config)  # as api.jobs.writer_collection builds it
    with pytest.raises(CollectionNotFound, match="public"):
        with stale_writer.writer(timeout=5):
            stale_writer.delete([secret_id])
    assert [d["source"] for d in cli.collection("secret").documents()] == ["classified"]
    assert secret.document_text(secret_id) == "The launch code is 0000."
    server.close()
    cli.close()


def test_collection_ids_are_never_reused(tmp_path: Path, database_url: str, encoder) -> None:  # type: ignore[no-untyped-def]
    store = Store(tmp_path / "home", database_url)
    first = store.create_collection("first", _config(encoder)).id
    store.drop_collection("first")
    assert store.create_collection("second", _config(encoder)).id != first
    store.close()


def test_a_file_that_failed_inside_an_api_job_leaves_nothing_visible(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The write of a.txt fails after its rows are stamped (before its segment is built); b.txt,
    written next by the same job and writer, must not publish a.txt's rows."""
    from tests.test_api import Server, api_settings, start_server, upload, wait_job

    home = tmp_path / "home"
    settings = api_settings(home, auth=False)
    app, uv, thread, url = start_server(settings)
    server = Server(url=url, app=app, home=home, keys={})
    monkeypatch.setenv("RAG_FAILPOINT_RAISE", "write:after-pending@upload/a.txt")
    try:
        with server.client(key=None) as client:
            job = wait_job(client, upload(client, "jobs", [("a.txt", b"Alpha fails to be written."), ("b.txt", b"Beta is written.")]))
            assert job["status"] == "completed_with_errors"
            assert [e["source"] for e in job["errors"]] == ["a.txt"]
            listed = client.get("/v1/collections/jobs/documents").json()["documents"]
            assert [d["source"] for d in listed] == ["upload/b.txt"]
        report = server.state.runtime.collection("jobs").check()
        assert report.consistent and report.to_dict()["unpublished_documents"] == 0, report.to_dict()
    finally:
        uv.should_exit = True
        thread.join(timeout=30)


@pytest.mark.postgres
def test_a_starting_server_fails_only_its_own_interrupted_jobs(tmp_path: Path, postgres_url: str) -> None:
    """Two servers (two data homes) on one PostgreSQL: B's start-up fails the job B's previous
    process left running, never the job A is running right now."""
    from api.tables import JobRow
    from indexes.locking import WriterLock
    from tests.test_api import Server, api_settings, start_server, upload, wait_job

    home_a, home_b = tmp_path / "a", tmp_path / "b"
    app, uv, thread, url = start_server(api_settings(home_a, auth=False, database_url=postgres_url))
    servers = [(uv, thread)]
    try:
        a = Server(url=url, app=app, home=home_a, keys={})
        with a.client(key=None) as client:
            assert wait_job(client, upload(client, "a-docs", [("one.txt", b"The first file.")]))["status"] == "succeeded"
            store = Store(home_a, postgres_url)
            held = store.collection("a-docs")
            lock = WriterLock(store.engine, held.id, held.name)
            lock.acquire(10)  # A's next job runs and waits for the writer lock
            try:
                job = upload(client, "a-docs", [("two.txt", b"The second file.")])
                while job["status"] == "queued":
                    job = client.get(f"/v1/jobs/{job['id']}").json()
                assert job["status"] == "running"
                store_b = Store(home_b, postgres_url)
                with store_b.sessions.begin() as session:  # what B's killed previous process left
                    from api.tables import create_tables

                    create_tables(store_b.engine)
                    session.add(JobRow(id="b" * 32, collection="b-docs", kind="files", total=1, status="running", owner=store_b.home_id))
                app_b, uv_b, thread_b, _ = start_server(api_settings(home_b, auth=False, database_url=postgres_url))
                servers.append((uv_b, thread_b))
                assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "running"
                with store_b.sessions() as session:
                    assert session.get(JobRow, "b" * 32).status == "failed"  # type: ignore[union-attr]
            finally:
                lock.release()
            assert wait_job(client, job)["status"] == "succeeded"
            store.close()
            store_b.close()
    finally:
        for uv_, thread_ in servers:
            uv_.should_exit = True
            thread_.join(timeout=30)


def test_a_search_whose_snapshot_spans_two_publishes_finds_the_old_version(tmp_path: Path, database_url: str, encoder) -> None:  # type: ignore[no-untyped-def]
    """Candidates come from generation g; two publishes land before the search reads its rows
    (an API job publishes once per file): the replaced document is still found, as it was at g."""
    store = Store(tmp_path / "home", database_url)
    target = store.create_collection("test", _config(encoder))
    text = "Marie Curie was born in Warsaw. She discovered polonium and radium."
    with target.writer():
        target.write([_new(encoder, "curie", text), _new(encoder, "other", "Gabriel Lippmann won a Nobel Prize.")])
    reader = Store(tmp_path / "home", database_url).collection("test")
    snap, dense, sparse = reader.hybrid_candidates(encoder.encode(["Where was Curie born?"], kind="query"), ["Curie born"], 5)
    with target.writer():
        target.write([_new(encoder, "curie", text + " Revised.")])  # g + 1 removes the old version
        target.write([_new(encoder, "third", "A third document about weather.")])  # g + 2
    for found in (snap.passages(dense, 5), snap.passages(sparse, 5)):
        assert [p.text for p in found[0] if p.source == "curie"], "the replaced document vanished from a live snapshot"
    assert "Revised" not in " ".join(p.text for p in snap.passages(dense, 5)[0])
    assert target.stats()["documents"] == 3 and target.check().consistent
    with target.writer() as writer:  # once retained long enough, the next publish purges them
        writer.retain_removed = timedelta(0)
        target.write([_new(encoder, "fourth", "A fourth document about rain.")])
    with store.sessions() as session:
        assert session.scalar(select(func.count()).where(DocumentRow.removed_gen.is_not(None))) == 0
    reader.store.close()
    store.close()


def test_delete_refuses_an_external_id_that_names_several_documents_unless_all(tmp_path: Path) -> None:
    import json

    from tests.conftest import invoke

    home = tmp_path / "home"
    for name in ("a", "b"):  # external ids are unique per file, not per collection
        lines = [json.dumps({"_id": i, "text": f"Record {i} of file {name} about topic {i}."}) for i in ("1", "2")]
        (tmp_path / f"{name}.jsonl").write_text("\n".join(lines), encoding="utf-8")
    assert invoke("ingest", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"), home=home).returncode == 0
    refused = invoke("delete", "--external-id", "1", home=home)
    assert refused.returncode == 2 and refused.stdout == ""
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "a.jsonl#1" in refused.stderr and "b.jsonl#1" in refused.stderr and "--all" in refused.stderr
    store = Store(home)
    assert len(store.collection("default").documents()) == 4
    deleted = invoke("delete", "--external-id", "1", "--all", "--json", home=home)
    assert deleted.returncode == 0 and json.loads(deleted.stdout)["deleted"] == 2
    assert sorted(d["external_id"] for d in store.collection("default").documents()) == ["2", "2"]
    store.close()


def test_api_jobs_say_which_documents_were_merged(tmp_path: Path) -> None:
    from tests.test_api import Server, api_settings, start_server, upload, wait_job

    home = tmp_path / "home"
    app, uv, thread, url = start_server(api_settings(home, auth=False))
    try:
        with Server(url=url, app=app, home=home, keys={}).client(key=None) as client:
            documents = [{"id": "x", "text": "The first text of x."}, {"id": "x", "text": "The second text of x."}]
            posted = client.post("/v1/collections/dups/documents", json={"documents": documents})
            assert posted.status_code == 202, posted.text
            job = wait_job(client, posted.json())
            assert job["status"] == "succeeded" and job["stats"]["documents_added"] == 1
            assert job["duplicates"] == ["x"]
            job = wait_job(client, upload(client, "dups", [("same.txt", b"One text."), ("same.txt", b"Another text.")]))
            assert job["status"] == "succeeded" and job["duplicates"] == ["same.txt"]
            job = wait_job(client, upload(client, "dups", [("other.txt", b"No duplicate here.")]))
            assert job["duplicates"] == []
    finally:
        uv.should_exit = True
        thread.join(timeout=30)


def test_a_writer_after_a_clean_write_recovers_nothing_and_keeps_the_previous_generation(tmp_path: Path, encoder, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    import logging

    store = Store(tmp_path / "home")
    target = store.create_collection("test", _config(encoder))
    with target.writer():
        target.write([_new(encoder, "curie", "Marie Curie was born in Warsaw.")])
        first = set(target.snapshot().manifest.files())
        target.write([_new(encoder, "curie", "Marie Curie was born in Warsaw in 1867.")])  # segment 1 all dead: compacted away
    retired = first - target.snapshot().manifest.files()
    assert retired and all((target.folder / name).exists() for name in retired)  # kept for readers of the previous generation
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="indexes.writer"), target.writer() as writer:
        assert writer.recover() == {"rolled_back": 0, "restored": 0, "files": 0, "runs": 0}
    assert not [r for r in caplog.records if "recovered" in r.getMessage()], caplog.text
    assert all((target.folder / name).exists() for name in retired)
    (target.folder / "seg-000099.faiss").write_bytes(b"left by a crashed writer")
    with caplog.at_level(logging.WARNING, logger="indexes.writer"), target.writer():
        pass
    assert "1 stray files removed" in caplog.text and not (target.folder / "seg-000099.faiss").exists()
    store.close()


@pytest.mark.parametrize("command", [("collections",), ("collections", "--json"), ("doctor", "--check-only")])
def test_read_only_commands_on_a_missing_data_home_say_so_and_create_nothing(tmp_path: Path, command: tuple[str, ...]) -> None:
    from tests.conftest import invoke

    home = tmp_path / "nowhere"
    result = invoke(*command, home=home)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and str(home) in result.stderr and "does not exist" in result.stderr, result.stderr
    assert not home.exists()


def test_deletes_waiting_for_the_writer_lock_do_not_starve_reads(tmp_path: Path) -> None:
    """Another process holds the collection's writer lock; 45 DELETEs wait for it (or are turned
    away with 503), and health checks and searches keep answering in time."""
    import os
    import subprocess
    import sys
    import threading

    import httpx

    from tests.test_api import REPO, Server, api_settings, start_server, upload, wait_job

    home = tmp_path / "home"
    app, uv, thread, url = start_server(api_settings(home, auth=False))
    holder = None
    try:
        with Server(url=url, app=app, home=home, keys={}).client(key=None) as client:
            assert wait_job(client, upload(client, "busy", [("a.txt", b"Alpha is a document about rivers.")]))["status"] == "succeeded"
            doc_id = client.get("/v1/collections/busy/documents").json()["documents"][0]["id"]
            hold = (
                "import sys, time\nfrom indexes.store import Store\nfrom indexes.locking import WriterLock\n"
                "store = Store(sys.argv[1]); c = store.collection('busy')\nlock = WriterLock(store.engine, c.id, c.name)\nlock.acquire(10)\n"
                "print('held', flush=True)\ntime.sleep(120)\n"
            )
            holder = subprocess.Popen(
                [sys.executable, "-c", hold, str(home)], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True
            )
            assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
            statuses: list[int | str] = []

            def delete() -> None:
                try:
                    with httpx.Client(base_url=url, timeout=8) as own:
                        statuses.append(own.delete(f"/v1/collections/busy/documents/{doc_id}").status_code)
                except httpx.TimeoutException:
                    statuses.append("waiting")

            deleters = [threading.Thread(target=delete) for _ in range(45)]
            for t in deleters:
                t.start()
            time.sleep(2)
            for _ in range(3):
                started = time.monotonic()
                assert client.get("/healthz", timeout=10).status_code == 200
                found = client.post("/v1/search", json={"query": "rivers", "collection": "busy", "k": 1}, timeout=10)
                assert found.status_code == 200, found.text
                assert time.monotonic() - started < 10
            for t in deleters:
                t.join()
            assert 503 in statuses and 200 not in statuses, statuses  # turned away while the lock is held
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
        uv.should_exit = True
        thread.join(timeout=60)


PACKAGES = ("indexes", "ingest", "rag", "api", "cli")


def _runs_at_import(node: ast.AST) -> Iterator[ast.AST]:
    """The statements under `node` that run when its module is imported: everything but function
    bodies (so `if TYPE_CHECKING:` blocks, try/except and class bodies count; imports deferred into
    a function do not, since they are how a heavy or optional import is put off on purpose)."""
    for child in ast.iter_child_nodes(node):
        if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield child
            yield from _runs_at_import(child)


def _import_graph(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    """Module -> the modules of `packages` it imports at import time, in every form: `import a.b`,
    `from a.b import c` (an edge to a.b.c when that is a module, else to a.b), relative imports.
    Parent packages are not edges of their own: a package's `__init__` that imports its submodules
    while they import one another is no cycle Python trips on."""
    files = {
        ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): path
        for package in packages
        for path in (root / package).rglob("*.py")
    }

    def known(name: str) -> str | None:
        """The deepest module of ours that `name` is or lies in."""
        while name not in files and "." in name:
            name = name.rsplit(".", 1)[0]
        return name if name in files else None

    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        here = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        targets: list[str] = []
        for node in _runs_at_import(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join([*here[: len(here) - node.level + 1], *([node.module] if node.module else [])]) if node.level else node.module or ""
                targets += [f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base for alias in node.names]
        graph[module] = {found for found in map(known, targets) if found is not None and found != module}
    return graph


def _import_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as the modules along it (first == last), or None (depth-first search)."""
    state: dict[str, str] = {}

    def visit(module: str, trail: list[str]) -> list[str] | None:
        state[module] = "open"
        for dep in sorted(graph.get(module, ())):
            if state.get(dep) == "open":
                return [*trail[trail.index(dep) :], dep]
            if dep not in state and (found := visit(dep, [*trail, dep])):
                return found
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module, [module])):
            return found
    return None


def test_the_cycle_check_sees_every_import_form(tmp_path: Path) -> None:
    """The helpers below find a planted cycle through each import form, and none without it."""
    forms = {
        "absolute": "import pkg.b",
        "from-module": "from pkg.b import VALUE",
        "from-package-submodule": "from pkg import b",
        "relative": "from . import b",
        "relative-module": "from .b import VALUE",
        "type-checking": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import VALUE",
    }
    for form, line in forms.items():
        package = tmp_path / form / "pkg"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "a.py").write_text(f"{line}\n")
        (package / "b.py").write_text("VALUE = 1\n\ndef later() -> None:\n    import pkg.a\n")
        assert _import_cycle(_import_graph(tmp_path / form, ("pkg",))) is None, form  # deferred: no cycle
        (package / "b.py").write_text("from pkg.a import *\nVALUE = 1\n")
        assert _import_cycle(_import_graph(tmp_path / form, ("pkg",))) in (["pkg.a", "pkg.b", "pkg.a"], ["pkg.b", "pkg.a", "pkg.b"]), form


def test_the_packages_import_each_other_in_one_direction() -> None:
    """No import cycle among the modules of indexes, ingest, rag, api and cli, counting every import
    that runs when a module is imported, those made only for type checking too (issue 26)."""
    cycle = _import_cycle(_import_graph(Path(__file__).resolve().parents[1], PACKAGES))
    assert cycle is None, f"import cycle: {' -> '.join(cycle or [])}"


def test_a_key_scoped_to_a_dropped_collection_reaches_nothing_of_the_one_that_took_its_id(tmp_path: Path, encoder) -> None:  # type: ignore[no-untyped-def]
    """The API has `public` open; another process drops it and creates `secret`: listing, reading
    and deleting through `public` answer 404 and leave `secret` whole."""
    from api.keys import KeyStore
    from tests.test_api import Server, api_settings, start_server, upload, wait_job

    home = tmp_path / "home"
    settings = api_settings(home)
    cli = Store(home, settings.sql_url)
    key = KeyStore(cli).create("public-writer", "write", "public")[0]
    app, uv, thread, url = start_server(settings)
    try:
        with Server(url=url, app=app, home=home, keys={"public": key}).client(key="public") as client:
            assert wait_job(client, upload(client, "public", [("p.txt", b"A public note.")]))["status"] == "succeeded"
            assert client.get("/v1/collections/public/documents").status_code == 200
            cli.drop_collection("public")
            secret = cli.create_collection("secret", _config(encoder))
            with secret.writer():
                secret.write([_new(encoder, "classified", "The launch code is 0000.")])
            secret_id = secret.documents()[0]["id"]
            assert client.get("/v1/collections/public/documents").status_code == 404
            assert client.delete(f"/v1/collections/public/documents/{secret_id}").status_code == 404
            found = client.post("/v1/search", json={"query": "launch code", "collection": "public", "k": 3})
            assert found.status_code == 404, found.text
        assert [d["source"] for d in cli.collection("secret").documents()] == ["classified"]
    finally:
        uv.should_exit = True
        thread.join(timeout=30)
        cli.close()


def test_a_database_made_before_these_columns_gets_them_when_opened(tmp_path: Path, encoder) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import inspect, text

    from api.tables import create_tables

    home = tmp_path / "home"
    store = Store(home)
    create_tables(store.engine)
    with store.engine.begin() as connection:  # the shape an older version left
        connection.execute(text("ALTER TABLE documents DROP COLUMN removed_at"))
        connection.execute(text("ALTER TABLE api_jobs DROP COLUMN duplicates"))
    store.close()
    store = Store(home)
    create_tables(store.engine)
    assert "removed_at" in {c["name"] for c in inspect(store.engine).get_columns("documents")}
    assert {"owner", "duplicates"} <= {c["name"] for c in inspect(store.engine).get_columns("api_jobs")}
    target = store.create_collection("test", _config(encoder))
    with target.writer():
        target.write([_new(encoder, "a", "A first text.")])
        target.write([_new(encoder, "a", "A second text.")])
    assert [d["source"] for d in target.documents()] == ["a"] and target.check().consistent
    store.close()
