"""Question in, ranked passages out: dense (FAISS), bm25 (keyword) or hybrid (both, fused).

Every retriever has the same two methods (`Retriever`); reranking and MMR wrap any of them.
All hits come back through SQL from one published snapshot of the collection, so a search sees
a write batch entirely or not at all. `SearchParams` (nprobe, efSearch) override the collection's
own for the queries of one retriever.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal

import numpy as np

from indexes.config import SearchParams
from indexes.encoder import Encoder
from indexes.errors import InvalidInput
from indexes.faisslib import load_faiss
from indexes.filters import Where
from indexes.store import Collection
from indexes.types import Passage, Ranking
from rag.fusion import Normalization, fuse

if TYPE_CHECKING:
    from rag.rerank import CrossEncoderReranker
    from rag.settings import Settings

RETRIEVER_KINDS: tuple[str, ...] = ("dense", "bm25", "hybrid")


def validate_query(query: str, max_chars: int) -> str:
    cleaned = query.strip()
    if not cleaned:
        raise InvalidInput("the query is empty")
    if len(cleaned) > max_chars:
        raise InvalidInput(
            f"the query is {len(cleaned):,} characters; the limit is {max_chars:,} (RAG_MAX_QUERY_CHARS)"
        )
    return cleaned


@contextmanager
def _few_query_threads(n_queries: int) -> Iterator[None]:
    """One OpenMP thread for FAISS while it answers a handful of queries.

    FAISS splits even a single query across its OpenMP threads; on a busy 2-core machine the
    threads wait for each other and a 12k-vector flat search took ~44 ms instead of ~1 ms.
    Batches keep every thread.
    """
    if n_queries > 4:
        yield
        return
    faiss = load_faiss()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


class Retriever(ABC):
    """Ranked passages for a query; `retrieve_many` answers several queries in one batch. The one
    contract of every retriever and wrapper, with the query and k checks they share."""

    max_query_chars: int
    max_k: int
    where: Where | None = None  # a filter pushed down into the indexes (indexes/filtered.py)

    def with_where(self, where: Where | None) -> Retriever:
        """This retriever searching only passages that match `where` (a shallow copy)."""
        import copy

        twin = copy.copy(self)
        twin.where = where if where else None
        base = getattr(self, "base", None)
        if isinstance(base, Retriever):
            twin.base = base.with_where(where)  # type: ignore[attr-defined]
        return twin

    def retrieve(self, query: str, k: int = 10) -> list[Passage]:
        return self.retrieve_many([query], k)[0]

    def _checked(self, queries: Sequence[str], k: int) -> list[str]:
        if not 1 <= k <= self.max_k:
            raise InvalidInput(f"k must be between 1 and {self.max_k}, not {k}")
        return [validate_query(q, self.max_query_chars) for q in queries]

    @abstractmethod
    def retrieve_many(self, queries: Sequence[str], k: int = 10) -> list[list[Passage]]: ...


class DenseRetriever(Retriever):
    """Embeds queries with the collection's own encoder and searches its FAISS index."""

    def __init__(
        self,
        collection: Collection,
        encoder: Encoder,
        max_query_chars: int = 2000,
        max_k: int = 1000,
        search_params: SearchParams | None = None,
    ) -> None:
        collection.require_encoder(encoder.spec)
        self.collection = collection
        self.encoder = encoder
        self.max_query_chars = max_query_chars
        self.max_k = max_k
        self.search_params = search_params

    def retrieve_many(self, queries: Sequence[str], k: int = 10) -> list[list[Passage]]:
        cleaned = self._checked(queries, k)
        vectors = self.encoder.encode(cleaned, kind="query")
        with _few_query_threads(len(cleaned)):
            if self.where:
                return self.collection.search(vectors, k, self.search_params, where=self.where)
            return self.collection.search(vectors, k, self.search_params)


class BM25Retriever(Retriever):
    """Searches the collection's BM25 keyword index (per-segment term counts written with each batch,
    idf computed at query time)."""

    def __init__(self, collection: Collection, max_query_chars: int = 2000, max_k: int = 1000) -> None:
        self.collection = collection
        self.max_query_chars = max_query_chars
        self.max_k = max_k

    def retrieve_many(self, queries: Sequence[str], k: int = 10) -> list[list[Passage]]:
        if self.where:
            return self.collection.keyword_search(self._checked(queries, k), k, where=self.where)
        return self.collection.keyword_search(self._checked(queries, k), k)


class HybridRetriever(Retriever):
    """Dense and BM25 candidates, each `depth` deep, fused by RRF or a convex combination."""

    def __init__(
        self,
        dense: DenseRetriever,
        sparse: BM25Retriever,
        fusion: Literal["rrf", "convex"] = "convex",
        rrf_k: float = 60.0,
        weight: float = 0.5,
        normalization: Normalization = "zscore",
        depth: int = 100,
    ) -> None:
        if fusion not in ("rrf", "convex"):
            raise InvalidInput(f"unknown fusion {fusion!r}; use 'rrf' or 'convex'")
        if depth < 1:
            raise InvalidInput("candidate depth must be at least 1")
        self.dense = dense
        self.sparse = sparse
        self.fusion = fusion
        self.rrf_k = rrf_k
        self.weight = weight
        self.normalization = normalization
        self.depth = depth
        self.max_query_chars = dense.max_query_chars
        self.max_k = dense.max_k

    def retrieve_many(self, queries: Sequence[str], k: int = 10) -> list[list[Passage]]:
        cleaned = self._checked(queries, k)
        depth = max(self.depth, k)
        vectors = self.dense.encoder.encode(cleaned, kind="query")
        with _few_query_threads(len(cleaned)):
            if self.where:
                snapshot, dense, sparse = self.dense.collection.hybrid_candidates(
                    vectors, cleaned, depth, self.dense.search_params, where=self.where
                )
            else:
                snapshot, dense, sparse = self.dense.collection.hybrid_candidates(vectors, cleaned, depth, self.dense.search_params)
        fused: list[Ranking] = [
            fuse(d, s, self.fusion, self.weight, self.normalization, self.rrf_k, depth) for d, s in zip(dense, sparse)
        ]
        # Only the winners are read from SQL, from the snapshot the candidates came from.
        return snapshot.passages(fused, k)


class RerankingRetriever(Retriever):
    """Any retriever's top `depth` candidates reordered by a cross-encoder."""

    def __init__(self, base: Retriever, reranker: CrossEncoderReranker, depth: int = 50) -> None:
        self.base = base
        self.reranker = reranker
        self.depth = depth
        self.max_query_chars = base.max_query_chars
        self.max_k = base.max_k

    def retrieve_many(self, queries: Sequence[str], k: int = 10) -> list[list[Passage]]:
        cleaned = self._checked(queries, k)
        candidates = self.base.retrieve_many(cleaned, max(self.depth, k))
        return [self.reranker.rerank(q, c[: max(self.depth, k)], k) for q, c in zip(cleaned, candidates)]


class MMRRetriever(Retriever):
    """Any retriever's top `depth` candidates reordered by MMR over their dense vectors."""

    def __init__(self, base: Retriever, collection: Collection, encoder: Encoder, lam: float = 0.7, depth: int = 50) -> None:
        if not 0.0 <= lam <= 1.0:
            raise InvalidInput("mmr lambda must be between 0 and 1")
        self.base = base
        self.collection = collection
        self.encoder = encoder
        self.lam = lam
        self.depth = depth
        self.max_query_chars = base.max_query_chars
        self.max_k = base.max_k

    def vectors_of(self, passages: Sequence[Passage]) -> np.ndarray:
        """Stored vectors reconstructed from FAISS; re-embedded where the index cannot (IVF, PQ)."""
        if not passages:
            return np.zeros((0, self.encoder.dim), dtype=np.float32)
        try:
            stored = self.collection.stored_vectors([p.chunk_id for p in passages])
            return np.vstack([stored[p.chunk_id] for p in passages])
        except (RuntimeError, KeyError):
            texts = [self.collection.embedding_text(p.title, p.text) for p in passages]
            return self.encoder.encode(texts, kind="passage")

    def retrieve_many(self, queries: Sequence[str], k: int = 10) -> list[list[Passage]]:
        from rag.rerank import mmr

        cleaned = self._checked(queries, k)
        candidates = self.base.retrieve_many(cleaned, max(self.depth, k))
        query_vectors = self.encoder.encode(cleaned, kind="query")
        return [mmr(c, self.vectors_of(c), k, self.lam, q) for c, q in zip(candidates, query_vectors)]


def build_retriever(
    collection: Collection,
    encoder: Encoder | None,
    settings: Settings,
    kind: str | None = None,
    reranker: CrossEncoderReranker | None = None,
    params: SearchParams | None = None,
) -> Retriever:
    """The retriever `settings` describe (`kind` overrides `settings.retriever`, `params` the
    settings' nprobe / efSearch where set), with reranking and MMR wrapped around it when configured."""
    kind = kind or settings.retriever
    if kind not in RETRIEVER_KINDS:
        raise InvalidInput(f"unknown retriever {kind!r}; use one of {', '.join(RETRIEVER_KINDS)}")
    limits = {"max_query_chars": settings.max_query_chars, "max_k": settings.max_k}
    params = (params or SearchParams()).over(SearchParams(nprobe=settings.nprobe, ef_search=settings.ef_search))
    if kind != "bm25" or settings.mmr_lambda is not None:
        if encoder is None:
            raise InvalidInput(f"the {kind} retriever needs the collection's encoder")
    retriever: Retriever
    if kind == "dense":
        assert encoder is not None
        retriever = DenseRetriever(collection, encoder, search_params=params, **limits)
    elif kind == "bm25":
        retriever = BM25Retriever(collection, **limits)
    else:
        assert encoder is not None
        retriever = HybridRetriever(
            DenseRetriever(collection, encoder, search_params=params, **limits),
            BM25Retriever(collection, **limits),
            fusion=settings.fusion,
            rrf_k=settings.rrf_k,
            weight=settings.hybrid_weight,
            normalization=settings.normalization,
            depth=settings.candidate_depth,
        )
    if reranker is not None:
        retriever = RerankingRetriever(retriever, reranker, settings.rerank_depth)
    if settings.mmr_lambda is not None:
        assert encoder is not None
        retriever = MMRRetriever(retriever, collection, encoder, settings.mmr_lambda, settings.rerank_depth)
    return retriever
