"""The BM25 keyword index stays in step with SQL: ingest, replace, delete, crashes and doctor."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from indexes.keyword import Analyzer, KeywordIndex, KeywordSpec
from indexes.store import CollectionConfig, Store
from indexes.types import Document
from ingest.chunking import SentenceWindowChunker
from ingest.pipeline import Ingestor

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "beir" / "scifact"


def scifact_sample(n: int) -> tuple[list[Document], dict[str, str]]:
    """The first n SciFact documents judged relevant to a train claim, and claim -> document id."""
    wanted: dict[str, str] = {}
    with (SCIFACT / "qrels" / "train.tsv").open() as handle:
        next(handle)
        for line in handle:
            qid, did, _ = line.split("\t")
            if did not in wanted.values():
                wanted[qid] = did
            if len(wanted) == n:
                break
    claims = {}
    with (SCIFACT / "queries.jsonl").open() as handle:
        for line in handle:
            record = json.loads(line)
            if record["_id"] in wanted:
                claims[record["text"]] = wanted[record["_id"]]
    docs = {}
    with (SCIFACT / "corpus.jsonl").open() as handle:
        for line in handle:
            record = json.loads(line)
            if record["_id"] in wanted.values():
                docs[record["_id"]] = Document(
                    source=f"scifact#{record['_id']}", text=record["text"], title=record["title"], external_id=record["_id"]
                )
    return list(docs.values()), claims


@pytest.fixture()
def collection(tmp_path: Path, encoder):  # type: ignore[no-untyped-def]
    store = Store(tmp_path / "home")
    config = CollectionConfig(encoder=encoder.spec, dim=encoder.dim, chunk_tokens=96, chunk_overlap=16)
    yield store.create_collection("kw", config)
    store.close()


def ingest(collection, encoder, docs: list[Document]) -> None:  # type: ignore[no-untyped-def]
    chunker = SentenceWindowChunker(encoder.tokenizer, collection.config.chunk_tokens, collection.config.chunk_overlap)
    report = Ingestor(collection, encoder, chunker).ingest_documents(docs)
    assert not report.errors


def ready_chunk_ids(collection) -> set[int]:  # type: ignore[no-untyped-def]
    with collection.store.sessions() as session:
        return collection._ready_chunk_ids(session)


def test_analyzer_stems_lowercases_and_drops_stop_words() -> None:
    analyzer = Analyzer(KeywordSpec())
    assert analyzer("The Mutations of the BRCA1 genes") == ["mutat", "brca1", "gene"]


def test_bm25_ranks_the_chunk_sharing_the_rare_terms_first() -> None:
    index = KeywordIndex.build(
        [10, 11, 12],
        ["aspirin lowers the risk of stroke", "statins lower cholesterol", "stroke rehabilitation after injury"],
    )
    scores, ids = index.search(["does aspirin prevent strokes"], 3)[0]
    assert ids.tolist() == [10, 12]  # the statin chunk shares no term and is left out
    assert scores[0] > scores[1] > 0


def test_saved_index_scores_exactly_as_the_built_one(tmp_path: Path) -> None:
    docs, claims = scifact_sample(20)
    built = KeywordIndex.build(list(range(len(docs))), [d.text for d in docs], fingerprint=(20, 190, 19), generation=3)
    built.save(tmp_path / "k.npz")
    loaded = KeywordIndex.load(tmp_path / "k.npz")
    assert loaded.fingerprint == (20, 190, 19) and loaded.generation == 3
    for claim in list(claims)[:5]:
        (s1, i1), (s2, i2) = built.search([claim], 10)[0], loaded.search([claim], 10)[0]
        assert i1.tolist() == i2.tolist()
        np.testing.assert_allclose(s1, s2)


def test_ingest_builds_bm25_over_exactly_the_ready_chunks(collection, encoder) -> None:  # type: ignore[no-untyped-def]
    docs, _ = scifact_sample(12)
    ingest(collection, encoder, docs)
    assert set(collection.keyword().ids().tolist()) == ready_chunk_ids(collection)
    hits = collection.keyword_search([docs[3].title], 5)[0]
    assert hits and hits[0].external_id == docs[3].external_id
    assert collection.check().consistent


def test_replacing_a_document_replaces_its_bm25_entries(collection, encoder) -> None:  # type: ignore[no-untyped-def]
    docs, _ = scifact_sample(6)
    ingest(collection, encoder, docs)
    old = docs[0]
    ingest(collection, encoder, [Document(old.source, "Zebrafish regenerate cardiac tissue quickly.", old.title, external_id=old.external_id)])
    assert set(collection.keyword().ids().tolist()) == ready_chunk_ids(collection)
    hits = collection.keyword_search(["zebrafish cardiac regeneration"], 3)[0]
    assert hits[0].source == old.source and "Zebrafish" in hits[0].text
    old_words = " ".join(old.text.split()[:30])
    assert all("Zebrafish" in h.text for h in collection.keyword_search([old_words], 10)[0] if h.source == old.source)


def test_a_deleted_document_never_comes_back_through_bm25(collection, encoder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    docs, _ = scifact_sample(8)
    ingest(collection, encoder, docs)
    claim, doc_id = docs[0].title, docs[0].external_id
    # A second reader (another process, in effect) loads the index before the delete.
    other = Store(tmp_path / "home").collection("kw")
    assert other.keyword_search([claim], 5)[0][0].external_id == doc_id
    victim = collection.find_documents(doc_id)
    with collection.writer():
        collection.delete(victim)
    for reader in (collection, other):
        assert all(h.external_id != doc_id for h in reader.keyword_search([claim], 50)[0])
    assert set(collection.keyword().ids().tolist()) == ready_chunk_ids(collection)


def test_a_missing_keyword_file_is_rebuilt_on_first_use(collection, encoder) -> None:  # type: ignore[no-untyped-def]
    docs, _ = scifact_sample(6)
    ingest(collection, encoder, docs)
    collection.keyword_path.unlink()  # a collection made before keyword search existed
    collection._keyword = None
    assert not collection.check().consistent
    assert collection.keyword_search([docs[2].title], 3)[0][0].external_id == docs[2].external_id
    assert collection.keyword_path.exists()
    assert collection.check().consistent


def test_a_crash_before_the_keyword_rebuild_is_detected_and_repaired(collection, encoder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    docs, _ = scifact_sample(4)
    ingest(collection, encoder, docs)
    before = collection.keyword_path.read_bytes()
    # A writer that dies (kill -9) after SQL and FAISS committed, before the writer session ends.
    script = textwrap.dedent(
        f"""
        import os, numpy as np
        from indexes.store import NewDocument, Store
        from indexes.types import Chunk, Document
        c = Store({str(tmp_path / "home")!r}).collection("kw")
        with c.writer():
            text = "Quokka populations decline on Rottnest Island."
            doc = Document("quokka", text, "Quokka")
            c.write([NewDocument(doc, "h", [Chunk(text, 0, len(text), 0)], np.ones((1, {encoder.dim}), np.float32))])
            os._exit(137)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True)
    assert done.returncode == 137, done.stderr
    assert collection.keyword_path.read_bytes() == before  # the stale generation is still on disk
    report = collection.check()
    assert len(report.missing_in_keyword) == 1 and not report.consistent
    # Readers detect the stale fingerprint and rebuild; so would the next writer or `rag doctor`.
    fresh = Store(tmp_path / "home").collection("kw")
    assert fresh.keyword_search(["quokka Rottnest"], 1)[0][0].source == "quokka"
    assert collection.check().consistent


def test_doctor_repairs_a_keyword_index_that_disagrees_with_sql(collection, encoder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    docs, _ = scifact_sample(4)
    ingest(collection, encoder, docs[:2])
    stale = tmp_path / "stale.npz"
    shutil.copy(collection.keyword_path, stale)
    ingest(collection, encoder, docs[2:])
    os.replace(stale, collection.keyword_path)  # e.g. restored from an old backup
    report = collection.check()
    assert report.missing_in_keyword and not report.consistent
    assert report.to_dict()["missing_in_keyword"] == len(report.missing_in_keyword)
    with collection.writer():
        repaired = collection.repair(lambda texts: encoder.encode(texts, kind="passage"))
    assert repaired.consistent
    assert set(KeywordIndex.read_ids(collection.keyword_path).tolist()) == ready_chunk_ids(collection)
