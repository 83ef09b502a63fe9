"""The store keeps SQL and FAISS in step: on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from indexes.encoder import EncoderSpec
from indexes.errors import CollectionNotFound, EncoderMismatch, InvalidInput
from indexes.store import CollectionConfig, NewDocument, SearchParams, Store
from indexes.types import Document
from ingest.chunking import SentenceWindowChunker
from ingest.pipeline import document_hash

TEXTS = {
    "curie": "Marie Curie was born in Warsaw. She discovered polonium and radium with Pierre Curie.",
    "lippmann": "Gabriel Lippmann was born in Bonnevoie, Luxembourg. He won the 1908 Nobel Prize in Physics.",
    "faiss": "FAISS searches dense vectors. Flat indexes are exact; HNSW builds a graph.",
}


def _config(encoder) -> CollectionConfig:  # type: ignore[no-untyped-def]
    return CollectionConfig(encoder=encoder.spec, dim=encoder.dim, chunk_tokens=16, chunk_overlap=4)


def _new(encoder, source: str, text: str) -> NewDocument:  # type: ignore[no-untyped-def]
    doc = Document(source=source, text=text, title=source)
    chunks = SentenceWindowChunker(encoder.tokenizer, 16, 4).split(text)
    vectors = encoder.encode([c.text for c in chunks])
    return NewDocument(doc, document_hash(doc), chunks, vectors)


@pytest.fixture()
def collection(tmp_path: Path, database_url: str, encoder):  # type: ignore[no-untyped-def]
    store = Store(tmp_path / "home", database_url)
    yield store.create_collection("test", _config(encoder))
    store.close()


def test_written_documents_are_searchable_with_offsets_into_their_source(collection, encoder) -> None:  # type: ignore[no-untyped-def]
    with collection.writer():
        collection.write([_new(encoder, name, text) for name, text in TEXTS.items()])
    hits = collection.search(encoder.encode(["Where was Lippmann born?"], kind="query"), 3)[0]
    assert hits[0].source == "lippmann"
    assert [h.rank for h in hits] == [1, 2, 3]
    for hit in hits:
        assert TEXTS[hit.source][hit.start : hit.end] == hit.text
    assert collection.check().consistent


def test_replacing_a_document_swaps_its_chunks_and_vectors(collection, encoder) -> None:  # type: ignore[no-untyped-def]
    with collection.writer():
        collection.write([_new(encoder, "curie", TEXTS["curie"])])
        old_ids = collection.snapshot().visible_chunk_ids()
        result = collection.write([_new(encoder, "curie", "Marie Curie moved to Paris in 1891.")])
    assert result["replaced"] == 1
    new_ids = collection.snapshot().visible_chunk_ids()
    assert not old_ids & new_ids
    assert collection.stats()["documents"] == 1
    assert collection.check().consistent
    hit = collection.search(encoder.encode(["When did Curie move to Paris?"], kind="query"), 1)[0][0]
    assert "1891" in hit.text


def test_delete_removes_rows_and_vectors_together(collection, encoder) -> None:  # type: ignore[no-untyped-def]
    with collection.writer():
        collection.write([_new(encoder, name, text) for name, text in TEXTS.items()])
        target = collection.find_documents("faiss", by="source")
        collection.delete(target)
    stats = collection.stats()
    assert stats["documents"] == 2
    assert stats["chunks"] == stats["vectors"]
    hits = collection.search(encoder.encode(["dense vector search graph"], kind="query"), 10)[0]
    assert all(h.source != "faiss" for h in hits)
    assert collection.check().consistent


def test_chunk_ids_are_never_reused_after_a_delete(collection, encoder) -> None:  # type: ignore[no-untyped-def]
    with collection.writer():
        collection.write([_new(encoder, "a", TEXTS["curie"])])
        first = collection.snapshot().visible_chunk_ids()
        collection.delete(collection.find_documents("a", by="source"))
        collection.write([_new(encoder, "b", TEXTS["curie"])])
        second = collection.snapshot().visible_chunk_ids()
    assert min(second) > max(first)


def test_writes_need_the_writer_lock(collection, encoder) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RuntimeError):
        collection.write([_new(encoder, "a", TEXTS["curie"])])


def test_a_missing_segment_is_reported_and_repaired_by_re_embedding(collection, encoder) -> None:  # type: ignore[no-untyped-def]
    with collection.writer():
        collection.write([_new(encoder, name, text) for name, text in TEXTS.items()])
    for path in collection.folder.glob("seg-*.faiss"):
        path.unlink()
    report = Store(collection.store.home, str(collection.store.engine.url.render_as_string(hide_password=False))).collection("test").check()
    assert not report.consistent and report.unreadable_segments and report.problems()
    with collection.writer():
        repaired = collection.repair(lambda texts: encoder.encode(texts))
    assert repaired.consistent
    assert collection.search(encoder.encode(["Where was Lippmann born?"], kind="query"), 1)[0][0].source == "lippmann"


def test_stray_files_and_dead_runs_are_cleaned_by_the_next_writer(collection, encoder) -> None:  # type: ignore[no-untyped-def]
    from indexes.schema import RunRow

    with collection.writer():
        collection.write([_new(encoder, "curie", TEXTS["curie"])])
    stray = collection.folder / "seg-000009.faiss.abc123.tmp"  # an atomic save killed before its rename
    stray.write_bytes(b"half")
    with collection.store.sessions.begin() as session:
        session.add(RunRow(collection_id=collection.id, status="running"))  # its process was killed
    with collection.writer():
        pass
    assert not stray.exists()
    with collection.store.sessions() as session:
        assert [r.status for r in session.query(RunRow)] == ["interrupted"]
    assert collection.check().consistent


def test_a_collection_refuses_another_encoder(collection) -> None:  # type: ignore[no-untyped-def]
    other = EncoderSpec(model="facebook/contriever", pooling="mean", normalize=False)
    with pytest.raises(EncoderMismatch, match="facebook/contriever"):
        collection.require_encoder(other)


def test_unknown_collections_and_bad_names_are_clear_errors(tmp_path: Path, encoder) -> None:  # type: ignore[no-untyped-def]
    store = Store(tmp_path / "home")
    with pytest.raises(CollectionNotFound, match="no collection named 'nope'"):
        store.collection("nope")
    with pytest.raises(InvalidInput):
        store.create_collection("../escape", _config(encoder))


@pytest.mark.parametrize("factory", ["HNSW16", "IVF4,Flat"])
def test_other_faiss_indexes_support_add_remove_and_id_listing(tmp_path: Path, encoder, factory: str) -> None:  # type: ignore[no-untyped-def]
    store = Store(tmp_path / "home")
    config = CollectionConfig(encoder=encoder.spec, dim=encoder.dim, index_factory=factory, chunk_tokens=16, chunk_overlap=4)
    collection = store.create_collection("c", config)
    sentences = [f"Sentence number {i} talks about topic {i % 7} in some detail." for i in range(60)]
    with collection.writer():
        collection.write([_new(encoder, f"doc{i}", s) for i, s in enumerate(sentences)])
        collection.delete(collection.find_documents("doc3", by="source"))
    assert collection.check().consistent
    assert collection.stats()["vectors"] == 59
    assert collection.stats()["documents"] == 59
