"""Merging ranked lists from different retrievers: reciprocal rank fusion and convex combination.

Pure functions over `Passage` lists keyed by chunk id, so they are tested without any index.
RRF (Cormack et al., 2009) needs only ranks and so ignores how each retriever scales its scores;
the convex combination needs scores on a common scale, hence min-max or z-score normalisation
per list first (Bruch et al., 2023, "An Analysis of Fusion Functions for Hybrid Retrieval").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

import numpy as np

from indexes.errors import InvalidInput
from indexes.types import Passage, Ranking

Normalization = Literal["minmax", "zscore"]


def ranking_of(passages: Sequence[Passage]) -> Ranking:
    return np.asarray([p.score for p in passages], dtype=np.float64), np.asarray([p.chunk_id for p in passages], dtype=np.int64)


def _ranked(fused: Ranking, passages: dict[int, Passage], k: int) -> list[Passage]:
    scores, ids = fused
    return [dataclasses.replace(passages[int(c)], score=float(s), rank=i + 1) for i, (s, c) in enumerate(zip(scores[:k], ids[:k]))]


def _order(scores: np.ndarray, ids: np.ndarray) -> Ranking:
    # Ties broken by chunk id: the same inputs always give the same order.
    order = np.lexsort((ids, -scores))
    return scores[order], ids[order]


def rrf_ranking(rankings: Sequence[Ranking], rrf_k: float = 60.0, weights: Sequence[float] | None = None) -> Ranking:
    """score(d) = sum over lists of weight / (rrf_k + rank(d)); a list that lacks d adds nothing.
    Every candidate of the union, best first."""
    if rrf_k < 0:
        raise InvalidInput("rrf_k must not be negative")
    weights = list(weights) if weights is not None else [1.0] * len(rankings)
    ids = np.unique(np.concatenate([r[1] for r in rankings])) if rankings else np.zeros(0, np.int64)
    total = np.zeros(len(ids), dtype=np.float64)
    for weight, (_, side) in zip(weights, rankings):
        total[np.searchsorted(ids, side)] += weight / (rrf_k + np.arange(1, len(side) + 1, dtype=np.float64))
    return _order(total, ids)


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[Passage]], k: int, rrf_k: float = 60.0, weights: Sequence[float] | None = None
) -> list[Passage]:
    """`rrf_ranking` over passage lists: the top k passages with their fused scores."""
    passages = {p.chunk_id: p for ranking in reversed(rankings) for p in reversed(ranking)}
    return _ranked(rrf_ranking([ranking_of(r) for r in rankings], rrf_k, weights), passages, k)


def normalize_scores(scores: np.ndarray, method: Normalization = "zscore") -> np.ndarray:
    """Scores of one list mapped to a common scale: [0, 1] (min-max) or mean 0, sd 1 (z-score)."""
    return _normalized(scores, method)[0]


def _normalized(scores: np.ndarray, method: Normalization) -> tuple[np.ndarray, float]:
    """(normalised scores, the score of a passage the list did not return).

    A missing passage counts as the list's lowest candidate. When the list cannot be spread out
    (one hit, or all tied) its hits are one unit above a missing passage (1 vs 0 for min-max,
    0 vs -1 for z-score): a lone keyword hit still beats documents the keyword side never found.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if method not in ("minmax", "zscore"):
        raise InvalidInput(f"unknown normalization {method!r}; use 'minmax' or 'zscore'")
    if len(scores) == 0:
        return scores, 0.0
    if method == "minmax":
        span = scores.max() - scores.min()
        if span > 0:
            normalized = (scores - scores.min()) / span
            return normalized, float(normalized.min())
        return np.ones_like(scores), 0.0
    sd = scores.std()
    if sd > 0:
        normalized = (scores - scores.mean()) / sd
        return normalized, float(normalized.min())
    return np.zeros_like(scores), -1.0


def convex_ranking(
    dense: Ranking,
    sparse: Ranking,
    weight: float = 0.5,
    normalization: Normalization = "zscore",
    depth: int | None = None,
) -> Ranking:
    """score(d) = weight * dense'(d) + (1 - weight) * sparse'(d) over normalised scores; every
    candidate of the union, best first.

    A passage one list did not return gets that list's lowest normalised score: it ranked below
    everything the list returned, so it is treated as no better than its last candidate. Except
    where the keyword list is known to be complete: asked for `depth` candidates, BM25 returns
    every passage that shares a term with the query when fewer match, and every other passage
    scores exactly 0. Those zeros then count in its normalisation (the list is padded to `depth`
    with 0) and a passage it lacks gets the normalised 0. Without that, a lone keyword hit (the
    only passage holding a rare query term) was one unit above "missing" while 100 dense
    candidates spread over about five, and z-score fusion ranked it 76th of 101 (issue 26).
    """
    if not 0.0 <= weight <= 1.0:
        raise InvalidInput("hybrid weight must be between 0 and 1")
    ids = np.union1d(dense[1], sparse[1]).astype(np.int64)
    total = np.zeros(len(ids), dtype=np.float64)
    for share, (scores, side), complete in ((weight, dense, False), (1.0 - weight, sparse, True)):
        padding = max(0, depth - len(side)) if complete and depth is not None else 0
        if padding and len(side):
            padded = np.concatenate([np.asarray(scores, dtype=np.float64), np.zeros(padding)])
            normalized_all, _ = _normalized(padded, normalization)
            normalized, floor = normalized_all[: len(side)], float(normalized_all[-1])
        else:
            normalized, floor = _normalized(scores, normalization)
        values = np.full(len(ids), floor, dtype=np.float64)
        values[np.searchsorted(ids, side)] = normalized
        total += share * values
    return _order(total, ids)


def convex_combination(
    dense: Sequence[Passage],
    sparse: Sequence[Passage],
    k: int,
    weight: float = 0.5,
    normalization: Normalization = "zscore",
) -> list[Passage]:
    """`convex_ranking` over passage lists: the top k passages with their fused scores."""
    passages = {p.chunk_id: p for ranking in (sparse, dense) for p in reversed(ranking)}
    return _ranked(convex_ranking(ranking_of(dense), ranking_of(sparse), weight, normalization), passages, k)


Fusion = Literal["rrf", "convex"]


def fuse(
    dense: Ranking,
    sparse: Ranking,
    fusion: Fusion = "convex",
    weight: float = 0.5,
    normalization: Normalization = "zscore",
    rrf_k: float = 60.0,
    depth: int | None = None,
) -> Ranking:
    """One hybrid ranking from the dense and keyword candidates, as `HybridRetriever` fuses them,
    `depth` being how many candidates each side was asked for (see `convex_ranking`). `weight` is
    the dense share for RRF too (weighted RRF; 0.5 is plain RRF)."""
    if fusion == "rrf":
        return rrf_ranking([dense, sparse], rrf_k, [2 * weight, 2 * (1 - weight)])
    if fusion == "convex":
        return convex_ranking(dense, sparse, weight, normalization, depth)
    raise InvalidInput(f"unknown fusion {fusion!r}; use 'rrf' or 'convex'")
