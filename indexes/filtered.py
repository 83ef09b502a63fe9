"""Filtered search pushed down into the indexes: a filter resolved to the snapshot's matching
chunk ids (indexes/matching.py), FAISS and BM25 search only those, so a filtered search returns min(k, matches)
passages, all matching, never the survivors of a post-filter.

The planner chooses per segment by the size of the matching set, as Qdrant's does: an exact
segment (Flat) or a small matching set is searched by brute force over the matching vectors (read
in place from FAISS's storage, or reconstructed), which is exact and, for a selective filter, the
fastest query; a large set in an HNSW or IVF segment is searched by the index itself with an id
selector (`SearchParameters(sel=IDSelectorBitmap)`), HNSW with its candidate list widened by the
inverse selectivity. A query the index answers with fewer than min(k, matches) hits is redone exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from indexes.config import SearchParams
from indexes.faisslib import load_faiss
from indexes.types import Ranking
from indexes.vector import VectorIndex

if TYPE_CHECKING:
    from indexes.segments import Segment
    from indexes.snapshot import Snapshot

EXACT_LIMIT = 4096  # matching vectors in a segment at or below which it is searched exactly
EXACT_FRACTION = 0.05  # ... or this share of the segment: a sparse selector starves HNSW and IVF
MAX_EF_SEARCH = 1024
GATHER_SHARE = 4  # an exact search copies the matching vectors out while they are under 1/4 of the segment
EXACT_VIA_LISTS = 1024  # matching vectors in an IVF above which an exact search scans its lists


def _empty() -> Ranking:
    return np.zeros(0, np.float32), np.zeros(0, np.int64)


def _top(scores: np.ndarray, ids: np.ndarray, k: int) -> Ranking:
    """Best k by score, ties by chunk id (the unfiltered search's order)."""
    if len(scores) > k:
        keep = np.argpartition(-scores, k - 1)[:k]
        scores, ids = scores[keep], ids[keep]
    order = np.lexsort((ids, -scores))
    return scores[order].astype(np.float32), ids[order]


def _selector(allowed: np.ndarray) -> tuple[Any, Any]:
    """A FAISS selector over `allowed` and the buffer it reads (which must outlive the search):
    a bitmap over chunk ids while they are dense enough, else a hashed batch."""
    faiss = load_faiss()
    top = int(allowed[-1]) + 1
    if top <= 64 * max(len(allowed), 1) * 8:
        bits = np.zeros((top + 7) // 8, dtype=np.uint8)
        np.bitwise_or.at(bits, allowed >> 3, (1 << (allowed & 7)).astype(np.uint8))
        return faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bits)), bits
    return faiss.IDSelectorBatch(allowed), allowed


def _exact(segment: Segment, positions: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int, selector: Any) -> list[Ranking]:
    """Top-k of the matching vectors by brute force: read in place where FAISS stores them
    uncompressed; in an IVF holding many of them, every list scanned with the selector (the same
    scores, without copying vectors out: 4,820 of 100,000 reconstructed cost 8 ms, the scan
    2.5); else reconstructed."""
    stored = segment.flat_vectors
    if stored is None and len(ids) > EXACT_VIA_LISTS and isinstance(segment.vectors, VectorIndex) and segment.vectors.nlist() > 1:
        scores, labels = segment.vectors.search(queries, k, SearchParams(nprobe=segment.vectors.nlist()), selector=selector())
        return [(scores[q][labels[q] >= 0], labels[q][labels[q] >= 0]) for q in range(len(queries))]
    if stored is not None and len(positions) * GATHER_SHARE > len(stored):
        # many of the segment's vectors: score them all in place and keep the matching ones, rather
        # than copy the matching rows out first (50% of 100,000 Flat vectors: 42-51 ms gathered)
        scores = (queries @ stored.T)[:, positions]
    else:
        vectors = stored[positions] if stored is not None else segment.vectors_of(ids)
        scores = queries @ vectors.T
    return [_top(scores[q], ids, k) for q in range(len(queries))]


def _index_params(segment: Segment, chosen: SearchParams, k: int, matching: int) -> SearchParams:
    """What the segment's own index searches `matching` of its vectors with: its candidate budget
    widened by the inverse selectivity, so that as many matching vectors are scored as an
    unfiltered search scores vectors: HNSW's candidate list (and to at least 10 k: the post-filter
    this replaces searched max(10 k, 100) deep), IVF's lists probed (at most all of them); Flat
    as chosen."""
    widening = len(segment.ids) / max(matching, 1)
    effective = segment.vectors.effective_params(chosen, k)
    if "nprobe" in effective:
        nlist = segment.vectors.nlist()
        nprobe = min(nlist, max(effective["nprobe"], math.ceil(effective["nprobe"] * widening)))
        return SearchParams(nprobe=nprobe, ef_search=chosen.ef_search)
    if "HNSW" not in segment.vectors.factory:
        return chosen
    base = effective.get("ef_search", 64)
    widen = math.ceil(base * widening)
    return SearchParams(nprobe=chosen.nprobe, ef_search=min(MAX_EF_SEARCH, max(base, widen, 10 * k)))


def _is_exact_index(segment: Segment) -> bool:
    factory = segment.vectors.factory.replace("IDMap2,", "").replace("IDMap,", "")
    return factory == "Flat"


def dense(
    snap: Snapshot,
    queries: np.ndarray,
    k: int,
    allowed: np.ndarray,
    params: SearchParams | None = None,
    exact_limit: int = EXACT_LIMIT,
    exact_fraction: float = EXACT_FRACTION,
) -> list[Ranking]:
    """Top-k (scores, chunk ids) per query among `allowed` (sorted, visible chunk ids) only.
    `exact_limit`/`exact_fraction` are the planner's thresholds (0: an ANN segment always uses its
    index with the selector; tests and bench/filters.py set them)."""
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    if not len(allowed):
        return [_empty() for _ in range(len(queries))]
    chosen = (params or SearchParams()).over(snap.config.search)
    per_query: list[list[Ranking]] = [[] for _ in range(len(queries))]
    made: list[tuple[Any, Any]] = []

    def selector() -> Any:
        """The FAISS selector over `allowed`, made once (its buffer kept alive in `made`)."""
        if not made:
            made.append(_selector(allowed))
        return made[0][0]

    for segment in snap.segments:
        if not segment.vectors.count():
            continue
        positions, ids = segment.positions_of(allowed)
        if not len(ids):
            continue
        want = min(k, len(ids))
        if len(ids) == len(segment.ids):
            # every vector of the segment matches: its own search, as unfiltered (a brute force
            # over gathered copies of all of them cost 66 ms against 17 at 100k Flat vectors)
            scores, labels = segment.vectors.search(queries, want, _index_params(segment, chosen, k, len(ids)))
            found = [(scores[q][labels[q] >= 0], labels[q][labels[q] >= 0]) for q in range(len(queries))]
        elif _is_exact_index(segment) or len(ids) <= exact_limit or len(ids) < exact_fraction * len(segment.ids):
            found = _exact(segment, positions, ids, queries, want, selector)
        else:
            scores, labels = segment.vectors.search(queries, want, _index_params(segment, chosen, k, len(ids)), selector=selector())
            found = []
            for q in range(len(queries)):
                keep = labels[q] >= 0
                if int(keep.sum()) < want:  # the index ran dry: this query, exactly
                    found.append(_exact(segment, positions, ids, queries[q : q + 1], want, selector)[0])
                else:
                    found.append((scores[q][keep], labels[q][keep]))
        for q, ranking in enumerate(found):
            per_query[q].append(ranking)
    results: list[Ranking] = []
    for parts in per_query:
        if not parts:
            results.append(_empty())
            continue
        results.append(_top(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), k))
    return results


def keyword(snap: Snapshot, queries: Sequence[str], k: int, allowed: np.ndarray) -> list[Ranking]:
    """BM25 top-k per query scored over the matching chunks only (collection-wide idf, as a
    Lucene filter leaves it)."""
    if not len(allowed):
        return [_empty() for _ in queries]
    return snap.keyword_index.search(queries, k, allowed=allowed)
