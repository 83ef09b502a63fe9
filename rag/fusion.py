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
from indexes.types import Passage

Normalization = Literal["minmax", "zscore"]


def _ranked(scored: dict[int, float], passages: dict[int, Passage], k: int) -> list[Passage]:
    # Ties broken by chunk id: the same inputs always give the same order.
    order = sorted(scored, key=lambda cid: (-scored[cid], cid))[:k]
    return [dataclasses.replace(passages[cid], score=float(scored[cid]), rank=i + 1) for i, cid in enumerate(order)]


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[Passage]], k: int, rrf_k: float = 60.0, weights: Sequence[float] | None = None
) -> list[Passage]:
    """score(d) = sum over lists of weight / (rrf_k + rank(d)); a list that lacks d adds nothing."""
    if rrf_k < 0:
        raise InvalidInput("rrf_k must not be negative")
    weights = list(weights) if weights is not None else [1.0] * len(rankings)
    scored: dict[int, float] = {}
    passages: dict[int, Passage] = {}
    for weight, ranking in zip(weights, rankings):
        for rank, passage in enumerate(ranking, start=1):
            scored[passage.chunk_id] = scored.get(passage.chunk_id, 0.0) + weight / (rrf_k + rank)
            passages.setdefault(passage.chunk_id, passage)
    return _ranked(scored, passages, k)


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


def convex_combination(
    dense: Sequence[Passage],
    sparse: Sequence[Passage],
    k: int,
    weight: float = 0.5,
    normalization: Normalization = "zscore",
) -> list[Passage]:
    """score(d) = weight * dense'(d) + (1 - weight) * sparse'(d) over normalised scores.

    A passage one list did not return gets that list's lowest normalised score: it ranked below
    everything the list returned, so it is treated as no better than its last candidate.
    """
    if not 0.0 <= weight <= 1.0:
        raise InvalidInput("hybrid weight must be between 0 and 1")
    passages: dict[int, Passage] = {}
    sides: list[dict[int, float]] = []
    floors: list[float] = []
    for ranking in (dense, sparse):
        normalized, floor = _normalized(np.asarray([p.score for p in ranking]), normalization)
        sides.append({p.chunk_id: float(s) for p, s in zip(ranking, normalized)})
        floors.append(floor)
        for p in ranking:
            passages.setdefault(p.chunk_id, p)
    scored = {
        cid: weight * sides[0].get(cid, floors[0]) + (1.0 - weight) * sides[1].get(cid, floors[1]) for cid in passages
    }
    return _ranked(scored, passages, k)
