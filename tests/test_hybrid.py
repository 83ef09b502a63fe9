"""Fusion of dense and BM25 rankings, and the retrievers built from settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from indexes.errors import InvalidInput
from indexes.store import CollectionConfig, Store
from indexes.types import Passage
from ingest.chunking import SentenceWindowChunker
from ingest.pipeline import Ingestor
from rag.fusion import convex_combination, normalize_scores, reciprocal_rank_fusion
from rag.retrieval import BM25Retriever, DenseRetriever, HybridRetriever, Retriever, build_retriever
from rag.settings import Settings
from tests.test_keyword import scifact_sample


def _p(chunk_id: int, score: float, rank: int = 1) -> Passage:
    return Passage(chunk_id, chunk_id, f"text {chunk_id}", 0, 6, 0, f"s{chunk_id}", "", None, score, rank)


def _ranking(*pairs: tuple[int, float]) -> list[Passage]:
    return [_p(cid, score, rank) for rank, (cid, score) in enumerate(pairs, start=1)]


def test_rrf_prefers_a_passage_both_retrievers_rank_well_over_one_only_one_ranks_first() -> None:
    dense = _ranking((1, 0.9), (2, 0.8), (3, 0.7))
    sparse = _ranking((4, 20.0), (2, 15.0), (5, 9.0))
    fused = reciprocal_rank_fusion([dense, sparse], k=5, rrf_k=60)
    assert fused[0].chunk_id == 2
    assert fused[0].score == pytest.approx(2 / 62)
    assert [p.rank for p in fused] == [1, 2, 3, 4, 5]


def test_rrf_k_controls_how_much_the_top_ranks_dominate() -> None:
    dense = _ranking((1, 0.9), (2, 0.8), (3, 0.7))
    sparse = _ranking((4, 9.0), (5, 8.0), (3, 7.0))
    # Small k: being first in one list beats being third in both; large k: the reverse.
    assert reciprocal_rank_fusion([dense, sparse], k=1, rrf_k=0)[0].chunk_id == 1
    assert reciprocal_rank_fusion([dense, sparse], k=1, rrf_k=60)[0].chunk_id == 3


def test_min_max_and_z_score_normalisation() -> None:
    assert normalize_scores([2.0, 4.0, 6.0], "minmax").tolist() == [0.0, 0.5, 1.0]
    z = normalize_scores([2.0, 4.0, 6.0], "zscore")
    assert z.mean() == pytest.approx(0) and z.std() == pytest.approx(1)
    assert normalize_scores([3.0, 3.0], "minmax").tolist() == [1.0, 1.0]
    with pytest.raises(InvalidInput):
        normalize_scores([1.0], "softmax")  # type: ignore[arg-type]


def test_convex_weight_one_is_the_dense_order_and_zero_the_sparse_order() -> None:
    dense = _ranking((1, 0.9), (2, 0.5), (3, 0.1))
    sparse = _ranking((3, 30.0), (2, 20.0), (1, 10.0))
    for normalization in ("minmax", "zscore"):
        assert [p.chunk_id for p in convex_combination(dense, sparse, 3, 1.0, normalization)] == [1, 2, 3]
        assert [p.chunk_id for p in convex_combination(dense, sparse, 3, 0.0, normalization)] == [3, 2, 1]


def test_convex_counts_a_missing_side_as_that_sides_lowest_score() -> None:
    dense = _ranking((1, 0.9), (2, 0.2))
    sparse = _ranking((3, 12.0), (2, 11.0))
    fused = {p.chunk_id: p.score for p in convex_combination(dense, sparse, 3, 0.5, "minmax")}
    assert fused == pytest.approx({1: 0.5, 2: 0.0, 3: 0.5})


@pytest.mark.parametrize("normalization", ["zscore", "minmax"])
def test_a_lone_keyword_hit_outranks_passages_the_keyword_side_never_found(normalization: str) -> None:
    # Reproduced on the old code: z-score mapped a one-hit list to 0, the same as a missing
    # passage, so the only chunk containing the query's rare term ranked below dense-only hits.
    dense = _ranking((1, 0.80), (2, 0.79), (3, 0.78), (4, 0.77))
    sparse = _ranking((5, 7.5))
    fused = convex_combination(dense, sparse, 3, 0.5, normalization)  # type: ignore[arg-type]
    assert 5 in [p.chunk_id for p in fused]


def test_library_and_cli_default_to_the_same_fusion() -> None:
    from rag.settings import Settings

    hybrid = HybridRetriever.__init__.__defaults__  # type: ignore[misc]
    settings = Settings()
    assert hybrid[0] == settings.fusion and hybrid[3] == settings.normalization


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, encoder):  # type: ignore[no-untyped-def]
    docs, claims = scifact_sample(20)
    home = tmp_path_factory.mktemp("hybrid") / "home"
    store = Store(home)
    collection = store.create_collection("h", CollectionConfig(encoder=encoder.spec, dim=encoder.dim, chunk_tokens=128, chunk_overlap=16))
    chunker = SentenceWindowChunker(encoder.tokenizer, 128, 16)
    Ingestor(collection, encoder, chunker).ingest_documents(docs)
    yield collection, docs, claims
    store.close()


def test_hybrid_returns_k_distinct_ranked_passages_led_by_the_obvious_match(corpus, encoder) -> None:  # type: ignore[no-untyped-def]
    collection, docs, _ = corpus
    hybrid = HybridRetriever(DenseRetriever(collection, encoder), BM25Retriever(collection), depth=20)
    for fusion in ("rrf", "convex"):
        hybrid.fusion = fusion
        title = docs[5].title
        hits = hybrid.retrieve(title, 5)
        assert hits[0].external_id == docs[5].external_id
        assert len({h.chunk_id for h in hits}) == len(hits) == 5
        assert [h.rank for h in hits] == [1, 2, 3, 4, 5]


def test_hybrid_recall_at_10_is_at_least_that_of_either_side(corpus, encoder) -> None:  # type: ignore[no-untyped-def]
    collection, _, claims = corpus
    dense, sparse = DenseRetriever(collection, encoder), BM25Retriever(collection)
    hybrid = HybridRetriever(dense, sparse, depth=Settings().candidate_depth)  # the default depth and fusion

    def found(retriever: Retriever, k: int) -> int:
        results = retriever.retrieve_many(list(claims), k)
        return sum(doc in {h.external_id for h in hits} for doc, hits in zip(claims.values(), results))

    for k in (3, 10):
        assert found(hybrid, k) >= max(found(dense, k), found(sparse, k)), k


def test_a_deleted_document_never_comes_back_through_hybrid(tmp_path: Path, encoder) -> None:  # type: ignore[no-untyped-def]
    docs, _ = scifact_sample(6)
    store = Store(tmp_path / "home")
    collection = store.create_collection("d", CollectionConfig(encoder=encoder.spec, dim=encoder.dim, chunk_tokens=128, chunk_overlap=16))
    Ingestor(collection, encoder, SentenceWindowChunker(encoder.tokenizer, 128, 16)).ingest_documents(docs)
    reader = Store(tmp_path / "home").collection("d")
    hybrid = HybridRetriever(DenseRetriever(reader, encoder), BM25Retriever(reader), depth=50)
    assert hybrid.retrieve(docs[0].title, 1)[0].external_id == docs[0].external_id
    with collection.writer():
        collection.delete(collection.find_documents(docs[0].external_id or "", by="external_id"))
    for fusion in ("rrf", "convex"):
        hybrid.fusion = fusion
        assert all(h.external_id != docs[0].external_id for h in hybrid.retrieve(docs[0].title, 50))


def test_the_factory_builds_the_configured_retriever(corpus, encoder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    collection, docs, _ = corpus
    settings = Settings(home=tmp_path, retriever="hybrid", fusion="convex", hybrid_weight=0.3, candidate_depth=7)
    hybrid = build_retriever(collection, encoder, settings)
    assert isinstance(hybrid, HybridRetriever)
    assert (hybrid.fusion, hybrid.weight, hybrid.depth) == ("convex", 0.3, 7)
    assert isinstance(build_retriever(collection, None, settings, "bm25"), BM25Retriever)
    assert isinstance(build_retriever(collection, encoder, settings, "dense"), DenseRetriever)
    with pytest.raises(InvalidInput):
        build_retriever(collection, encoder, settings, "splade")
    with pytest.raises(InvalidInput):
        build_retriever(collection, None, settings, "hybrid")


def test_runtime_retriever_takes_a_kind(corpus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from rag.runtime import Runtime

    collection, docs, _ = corpus
    runtime = Runtime(Settings(home=collection.store.home, retriever="dense"))
    assert isinstance(runtime.retriever("h"), DenseRetriever)
    bm25 = runtime.retriever("h", kind="bm25")
    assert isinstance(bm25, BM25Retriever)
    assert bm25.retrieve(docs[1].title, 1)[0].external_id == docs[1].external_id


def test_a_lone_keyword_hit_ranks_near_the_top_at_the_default_depth(encoder) -> None:  # type: ignore[no-untyped-def]
    """Issue 26 item 18: 100 dense candidates (real cosine scores of SciFact abstracts for a claim)
    and one BM25 hit that dense did not return: the default fusion ranked it 76th of 101."""
    from rag.fusion import fuse, ranking_of

    docs, claims = scifact_sample(120)
    settings = Settings()
    depth = settings.candidate_depth
    claim = next(iter(claims))
    texts = [d.text for d in docs[: depth + 1]]
    scores = encoder.encode(texts, kind="passage") @ encoder.encode([claim], kind="query")[0]
    order = np.argsort(-scores)
    dense = _ranking(*((int(i), float(scores[i])) for i in order[:depth]))  # the depth best
    lone = int(order[depth])  # the one dense ranked below its depth
    sparse = _ranking((lone, 7.5))
    fused = fuse(ranking_of(dense), ranking_of(sparse), settings.fusion, settings.hybrid_weight, settings.normalization, settings.rrf_k, depth)
    rank = [int(c) for c in fused[1]].index(lone) + 1
    assert len(fused[1]) == depth + 1
    assert rank <= 3, f"the only keyword hit ranked {rank} of {depth + 1}"
