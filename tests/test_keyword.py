"""The BM25 keyword index stays in step with SQL: ingest, replace, delete, crashes and doctor."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from indexes.keyword import Analyzer, KeywordIndex, KeywordSpec, TermSegment, merge_term_segments
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
    return collection.snapshot().visible_chunk_ids()


def keyword_ids(collection) -> set[int]:  # type: ignore[no-untyped-def]
    """Chunk ids the published BM25 segments hold for visible documents."""
    return set(collection.snapshot().keyword_index.ids().tolist()) & ready_chunk_ids(collection)


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


def test_saved_segment_scores_exactly_as_the_built_one(tmp_path: Path) -> None:
    docs, claims = scifact_sample(20)
    spec = KeywordSpec()
    segment = TermSegment.build(list(range(len(docs))), [d.text for d in docs], Analyzer(spec))
    segment.save(tmp_path / "k.npz", spec)
    loaded, loaded_spec = TermSegment.load(tmp_path / "k.npz")
    assert loaded_spec == spec
    built, reloaded = KeywordIndex(spec, [segment]), KeywordIndex(spec, [loaded])
    for claim in list(claims)[:5]:
        (s1, i1), (s2, i2) = built.search([claim], 10)[0], reloaded.search([claim], 10)[0]
        assert i1.tolist() == i2.tolist()
        np.testing.assert_allclose(s1, s2)


def test_bm25_over_segments_scores_as_one_index_and_merges_without_reanalysis() -> None:
    docs, claims = scifact_sample(20)
    texts = [d.title + " " + d.text for d in docs]
    whole = KeywordIndex.build(list(range(20)), texts)
    analyzer = Analyzer(KeywordSpec())
    parts = [TermSegment.build(list(range(0, 7)), texts[:7], analyzer), TermSegment.build(list(range(7, 20)), texts[7:], analyzer)]
    split = KeywordIndex(KeywordSpec(), parts)
    merged = KeywordIndex(KeywordSpec(), [merge_term_segments(parts, [np.ones(7, bool), np.ones(13, bool)])])
    for claim in list(claims)[:8]:
        (s1, i1), (s2, i2), (s3, i3) = whole.search([claim], 10)[0], split.search([claim], 10)[0], merged.search([claim], 10)[0]
        assert i1.tolist() == i2.tolist() == i3.tolist()
        np.testing.assert_allclose(s1, s2, rtol=1e-5)
        np.testing.assert_allclose(s1, s3, rtol=1e-5)


def test_ingest_builds_bm25_over_exactly_the_ready_chunks(collection, encoder) -> None:  # type: ignore[no-untyped-def]
    docs, _ = scifact_sample(12)
    ingest(collection, encoder, docs)
    assert keyword_ids(collection) == ready_chunk_ids(collection)
    hits = collection.keyword_search([docs[3].title], 5)[0]
    assert hits and hits[0].external_id == docs[3].external_id
    assert collection.check().consistent


def test_replacing_a_document_replaces_its_bm25_entries(collection, encoder) -> None:  # type: ignore[no-untyped-def]
    docs, _ = scifact_sample(6)
    ingest(collection, encoder, docs)
    old = docs[0]
    ingest(collection, encoder, [Document(old.source, "Zebrafish regenerate cardiac tissue quickly.", old.title, external_id=old.external_id)])
    assert keyword_ids(collection) == ready_chunk_ids(collection)
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
    victim = collection.find_documents(doc_id, by="external_id")
    with collection.writer():
        collection.delete(victim)
    for reader in (collection, other):
        assert all(h.external_id != doc_id for h in reader.keyword_search([claim], 50)[0])
    assert keyword_ids(collection) == ready_chunk_ids(collection)


def test_a_batch_is_searchable_by_bm25_before_the_run_ends(collection, encoder) -> None:  # type: ignore[no-untyped-def]
    docs, _ = scifact_sample(6)
    chunker = SentenceWindowChunker(encoder.tokenizer, collection.config.chunk_tokens, collection.config.chunk_overlap)
    reader = Store(collection.store.home).collection("kw")
    seen: list[bool] = []

    class Watching(Ingestor):
        def _flush(self, pending, report):  # type: ignore[no-untyped-def]
            super()._flush(pending, report)
            hits = reader.keyword_search([pending[0][0].title], 3)[0]
            seen.append(bool(hits) and hits[0].source == pending[0][0].source)

    Watching(collection, encoder, chunker, batch_chunks=1).ingest_documents(docs)
    assert len(seen) == len(docs) and all(seen)


def test_a_missing_keyword_segment_is_reported_and_repaired(collection, encoder) -> None:  # type: ignore[no-untyped-def]
    docs, _ = scifact_sample(4)
    ingest(collection, encoder, docs)
    for path in collection.folder.glob("seg-*.bm25.npz"):
        path.unlink()
    report = Store(collection.store.home).collection("kw").check()
    assert not report.consistent and report.unreadable_segments
    with collection.writer():
        repaired = collection.repair(lambda texts: encoder.encode(texts, kind="passage"))
    assert repaired.consistent
    assert keyword_ids(collection) == ready_chunk_ids(collection)
    assert collection.keyword_search([docs[2].title], 3)[0][0].external_id == docs[2].external_id
