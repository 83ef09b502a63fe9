"""Ingestion is incremental: unchanged files cost no embedding, changed ones are replaced,
vanished ones removed; a bad file is reported by name and the rest goes on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from indexes.store import Store
from rag.runtime import Runtime
from rag.settings import Settings


@pytest.fixture()
def runtime(tmp_path: Path, encoder) -> Runtime:  # type: ignore[no-untyped-def]
    return Runtime(Settings(home=tmp_path / "home", chunk_tokens=48, chunk_overlap=8))


def _corpus(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "curie.txt").write_text("Marie Curie was born in Warsaw in 1867. She discovered radium.", encoding="utf-8")
    (folder / "lippmann.md").write_text("# Lippmann\n\nGabriel Lippmann was born in Bonnevoie, Luxembourg.", encoding="utf-8")
    (folder / "sub").mkdir(exist_ok=True)
    (folder / "sub" / "faiss.html").write_text("<p>FAISS searches dense vectors quickly.</p>", encoding="utf-8")
    return folder


def _ingest(runtime: Runtime, *paths: Path, prune: bool = True):  # type: ignore[no-untyped-def]
    collection = runtime.writable_collection("c")
    return runtime.ingestor(collection).ingest_paths([str(p) for p in paths], prune=prune)


def test_a_folder_is_ingested_recursively(runtime: Runtime, tmp_path: Path) -> None:
    report = _ingest(runtime, _corpus(tmp_path / "docs"))
    assert (report.files_seen, report.documents_added, report.errors) == (3, 3, [])
    assert runtime.collection("c").check().consistent


def test_re_ingesting_unchanged_files_does_no_embedding_work(runtime: Runtime, tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "docs")
    _ingest(runtime, corpus)
    again = _ingest(runtime, corpus)
    assert (again.documents_unchanged, again.chunks_added, again.embed_seconds) == (3, 0, 0.0)


def test_a_changed_file_replaces_its_chunks(runtime: Runtime, tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "docs")
    _ingest(runtime, corpus)
    (corpus / "curie.txt").write_text("Marie Curie moved to Paris in 1891.", encoding="utf-8")
    report = _ingest(runtime, corpus)
    assert (report.documents_replaced, report.documents_unchanged) == (1, 2)
    collection = runtime.collection("c")
    assert collection.stats()["documents"] == 3
    hits = runtime.retriever("c", "dense").retrieve("When did Curie move to Paris?", 1)
    assert "1891" in hits[0].text
    assert collection.check().consistent


def test_files_deleted_from_a_folder_are_removed_on_the_next_ingest(runtime: Runtime, tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "docs")
    _ingest(runtime, corpus)
    (corpus / "sub" / "faiss.html").unlink()
    report = _ingest(runtime, corpus)
    assert report.documents_deleted == 1
    assert runtime.collection("c").stats()["documents"] == 2


def test_no_prune_keeps_documents_of_vanished_files(runtime: Runtime, tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "docs")
    _ingest(runtime, corpus)
    (corpus / "curie.txt").unlink()
    assert _ingest(runtime, corpus, prune=False).documents_deleted == 0


def test_ingesting_one_file_never_prunes_its_neighbours(runtime: Runtime, tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "docs")
    _ingest(runtime, corpus)
    report = _ingest(runtime, corpus / "curie.txt")
    assert (report.documents_unchanged, report.documents_deleted) == (1, 0)


def test_a_jsonl_record_removed_from_its_file_is_deleted(runtime: Runtime, tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    records = [{"id": str(i), "title": f"T{i}", "text": f"Record number {i} mentions topic {i}."} for i in range(4)]
    path.write_text("\n".join(json.dumps(r) for r in records), encoding="utf-8")
    assert _ingest(runtime, path).documents_added == 4
    records[1]["text"] = "Record one now says something else entirely."
    path.write_text("\n".join(json.dumps(r) for r in records[:3]), encoding="utf-8")
    report = _ingest(runtime, path)
    assert (report.documents_replaced, report.documents_deleted, report.documents_unchanged) == (1, 1, 2)
    ids = sorted(d["external_id"] for d in runtime.collection("c").documents())
    assert ids == ["0", "1", "2"]


def test_bad_files_are_reported_by_name_and_the_rest_is_ingested(runtime: Runtime, tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "docs")
    (corpus / "latin1.txt").write_bytes(b"caf\xe9")
    (corpus / "empty.md").write_bytes(b"")
    (corpus / "broken.pdf").write_bytes(b"%PDF-1.4 garbage")
    report = _ingest(runtime, corpus)
    assert report.documents_added == 3
    errors = {Path(e["source"]).name: e["error"] for e in report.errors}
    assert set(errors) == {"latin1.txt", "empty.md", "broken.pdf"}
    assert "UTF-8" in errors["latin1.txt"] and "empty" in errors["empty.md"]


def test_a_file_over_the_size_limit_is_refused_without_being_read(runtime: Runtime, tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "docs")
    big = corpus / "huge.txt"
    with big.open("wb") as handle:  # a sparse 100 MB file: cheap to make, refused by its size
        handle.truncate(100 * 1024 * 1024)
    report = _ingest(runtime, corpus)
    assert report.documents_added == 3
    assert any("huge.txt" in e["error"] and "MiB limit" in e["error"] for e in report.errors)


def test_a_file_that_became_unreadable_keeps_what_was_stored(runtime: Runtime, tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "docs")
    _ingest(runtime, corpus)
    (corpus / "curie.txt").write_bytes(b"\xff\xfe broken now")
    report = _ingest(runtime, corpus)
    assert report.documents_deleted == 0 and report.errors
    assert runtime.collection("c").stats()["documents"] == 3


def test_runs_are_recorded_with_counts_and_errors(runtime: Runtime, tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "docs")
    (corpus / "empty.txt").write_bytes(b"")
    _ingest(runtime, corpus)
    last = runtime.collection("c").stats()["last_run"]
    assert last["status"] == "completed_with_errors"
    assert last["stats"]["documents_added"] == 3 and last["errors"] == 1


def test_the_same_store_works_on_postgresql(tmp_path: Path, postgres_url: str, encoder) -> None:  # type: ignore[no-untyped-def]
    rt = Runtime(Settings(home=tmp_path / "home", database_url=postgres_url, chunk_tokens=48, chunk_overlap=8))
    corpus = _corpus(tmp_path / "docs")
    assert _ingest(rt, corpus).documents_added == 3
    (corpus / "curie.txt").write_text("Marie Curie moved to Paris in 1891.", encoding="utf-8")
    assert _ingest(rt, corpus).documents_replaced == 1
    assert rt.collection("c").check().consistent
    assert isinstance(rt.store, Store) and rt.store.engine.dialect.name == "postgresql"


def test_a_source_repeated_in_one_request_or_file_is_stored_once_last_wins_and_reported(runtime: Runtime, tmp_path: Path) -> None:
    from indexes.types import Document

    collection = runtime.writable_collection("c")
    ingestor = runtime.ingestor(collection)
    # An API JSON upload repeating an id (two sources "api/7").
    report = ingestor.ingest_documents(
        [Document("api/7", "First text about radium.", external_id="7"), Document("api/7", "Second text about polonium.", external_id="7")]
    )
    assert report.duplicates == ["api/7"] and report.documents_added == 1
    # A JSONL file repeating a record id.
    records = tmp_path / "r.jsonl"
    records.write_text('{"_id": "a", "text": "one"}\n{"_id": "a", "text": "two about lakes"}\n{"_id": "b", "text": "three"}\n', encoding="utf-8")
    again = ingestor.ingest_paths([str(records)])
    assert again.duplicates == [f"{records.resolve()}#a"] and again.documents_added == 2
    docs = collection.documents()
    assert sorted(d["source"] for d in docs) == sorted(["api/7", f"{records.resolve()}#a", f"{records.resolve()}#b"])
    assert "polonium" in collection.document_text(collection.find_documents("api/7", by="source")[0])
    assert collection.check().consistent


def test_the_next_batch_is_chunked_while_the_current_one_is_embedded(runtime: Runtime, tmp_path: Path) -> None:
    """Pipeline overlap: the encoder's first batch waits until the second batch has been chunked,
    which only a chunking thread running beside the encoder can do (else the wait times out)."""
    import threading

    from ingest.chunking import SentenceWindowChunker
    from ingest.pipeline import Ingestor

    second_chunked = threading.Event()
    overlapped: list[bool] = []

    class WatchedChunker(SentenceWindowChunker):
        def split(self, text: str):  # type: ignore[no-untyped-def]
            if text.startswith("Second"):
                second_chunked.set()
            return super().split(text)

    collection = runtime.writable_collection("c")
    encoder = runtime.encoder_for(collection)
    plain_encode = encoder.encode

    class WaitingEncoder:
        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            return getattr(encoder, name)

        def encode(self, texts, kind="passage", progress=None):  # type: ignore[no-untyped-def]
            if any("First" in t for t in texts):
                overlapped.append(second_chunked.wait(timeout=10))
            return plain_encode(texts, kind=kind, progress=progress)

    chunker = WatchedChunker(encoder.tokenizer, 48, 8)
    ingestor = Ingestor(collection, WaitingEncoder(), chunker, batch_chunks=1)  # type: ignore[arg-type]
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "1.txt").write_text("First document, about radium.", encoding="utf-8")
    (tmp_path / "a" / "2.txt").write_text("Second document, about polonium.", encoding="utf-8")
    report = ingestor.ingest_paths([str(tmp_path / "a")])
    assert (report.documents_added, report.errors, overlapped) == (2, [], [True])
    assert collection.check().consistent


def test_a_chunking_error_in_the_producer_thread_fails_the_run_and_writes_nothing_after_it(runtime: Runtime, tmp_path: Path) -> None:
    from indexes.errors import RagError
    from ingest.chunking import SentenceWindowChunker
    from ingest.pipeline import Ingestor

    class BrokenChunker(SentenceWindowChunker):
        def split(self, text: str):  # type: ignore[no-untyped-def]
            if text.startswith("Second"):
                raise RagError("chunker broke")
            return super().split(text)

    collection = runtime.writable_collection("c")
    encoder = runtime.encoder_for(collection)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "1.txt").write_text("First document.", encoding="utf-8")
    (tmp_path / "a" / "2.txt").write_text("Second document.", encoding="utf-8")
    with pytest.raises(RagError, match="chunker broke"):
        Ingestor(collection, encoder, BrokenChunker(encoder.tokenizer, 48, 8), batch_chunks=1).ingest_paths([str(tmp_path / "a")])
    assert collection.check().consistent
