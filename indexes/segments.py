"""Immutable index segments: one FAISS file and one BM25 term file over the same chunk ids.

A write batch adds one segment; it never rewrites the others, so ingest I/O per batch does not
grow with the collection. Segments are merged by a log-structured policy (`MERGE_FACTOR` segments
of one size tier become one), which bounds their number at O(log n) and rewrites each vector
O(log n) times in all; a merge also drops the vectors of removed documents (tombstones) and is the
point where an index that needs training (IVF, PQ) is built once enough vectors exist: smaller
segments are exact (`Flat`). On-disk IVF segments (`OnDisk,IVF...`, indexes/ondisk.py) share one
trained quantizer and merge list by list on disk. Which segments a generation searches is recorded in SQL (the
collection's manifest), never inferred from the folder.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from indexes.config import SearchParams, is_ondisk
from indexes.errors import RagError
from indexes.keyword import Analyzer, KeywordSpec, TermSegment
from indexes.ondisk import DATA_SUFFIX, OnDiskIndex, write_lists
from indexes.vector import VectorIndex, stored_vectors, training_size

MERGE_FACTOR = 8
COMPACT_DEAD_FRACTION = 0.3  # a segment with more tombstones than this is rewritten


class SegmentMissing(RagError):
    """A segment named by the published manifest cannot be read from the data home."""

    code = "store_inconsistent"


@dataclass(frozen=True)
class SegmentInfo:
    """One manifest entry: what a reader needs to find a segment and a writer to plan merges."""

    name: str
    count: int
    dead: int = 0
    factory: str = "IDMap2,Flat"

    @property
    def live(self) -> int:
        return self.count - self.dead

    def files(self) -> tuple[str, ...]:
        """Every file of this segment: an on-disk IVF has its lists' data file besides."""
        return segment_files(self.name) + ((f"{self.name}{DATA_SUFFIX}",) if is_ondisk(self.factory) else ())

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "count": self.count, "dead": self.dead, "factory": self.factory}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SegmentInfo:
        return cls(str(data["name"]), int(data["count"]), int(data.get("dead", 0)), str(data.get("factory", "IDMap2,Flat")))


@dataclass(frozen=True)
class Manifest:
    """The index files of one published generation, as the collection row records them."""

    home: str
    segments: tuple[SegmentInfo, ...] = ()
    next_segment: int = 1
    # Files of the previous generation that this one no longer names: kept for readers still on
    # that generation, deleted by the next publish. Recovery keeps them too (they are no crash's).
    retained: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {"home": self.home, "next_segment": self.next_segment, "segments": [s.to_dict() for s in self.segments]}
        if self.retained:
            found["retained"] = list(self.retained)
        return found

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, home: str) -> Manifest:
        if not data:
            return cls(home=home)
        return cls(
            home=str(data.get("home", home)),
            segments=tuple(SegmentInfo.from_dict(s) for s in data.get("segments", [])),
            next_segment=int(data.get("next_segment", 1)),
            retained=tuple(str(name) for name in data.get("retained", ())),
        )

    def files(self) -> set[str]:
        return {name for s in self.segments for name in s.files()}

    def kept_files(self) -> set[str]:
        """What a clean folder holds: this generation's files and those retained from the last."""
        return self.files() | set(self.retained)


def segment_files(name: str) -> tuple[str, str]:
    return f"{name}.faiss", f"{name}.bm25.npz"


class Segment:
    """A loaded segment: its FAISS index, its term frequencies and the chunk ids both hold."""

    def __init__(self, info: SegmentInfo, vectors: VectorIndex, terms: TermSegment) -> None:
        self.info = info
        self.vectors = vectors
        self.terms = terms
        self._reading = threading.Lock()

    @property
    def ids(self) -> np.ndarray:
        return self.terms.ids

    @classmethod
    def build(
        cls,
        folder: Path,
        name: str,
        ids: np.ndarray,
        vectors: np.ndarray,
        texts: Sequence[str],
        dim: int,
        factory: str,
        spec: KeywordSpec,
        template: OnDiskIndex | None = None,
    ) -> Segment:
        """Write both files atomically; the configured index once there are enough vectors to
        train it, or at once when `template` (a trained on-disk segment) gives its quantizer."""
        ids = np.asarray(ids, dtype=np.int64)
        index = new_index(dim, factory, len(ids), template)
        index.add(ids, vectors)
        index.tune_ef_search(ids, vectors)
        terms = TermSegment.build(ids, texts, Analyzer(spec))
        faiss_file, bm25_file = segment_files(name)
        terms.save(folder / bm25_file, spec)
        index.save(folder / faiss_file)
        return cls(SegmentInfo(name, len(ids), 0, index.factory), index, terms)

    @classmethod
    def load(cls, folder: Path, info: SegmentInfo, mmap: bool) -> Segment:
        faiss_file, bm25_file = segment_files(info.name)
        try:
            loader = OnDiskIndex.load if is_ondisk(info.factory) else VectorIndex.load
            vectors = loader(folder / faiss_file, info.factory, mmap=mmap)
            terms, _ = TermSegment.load(folder / bm25_file)
        except (FileNotFoundError, RuntimeError, OSError, ValueError) as exc:
            raise SegmentMissing(f"segment {info.name} in {folder} cannot be read: {exc}") from None
        return cls(info, vectors, terms)

    def with_dead(self, dead: int) -> Segment:
        twin = Segment(replace(self.info, dead=dead), self.vectors, self.terms)
        twin._reading = self._reading  # the same FAISS index, so the same lock
        return twin

    def search(self, queries: np.ndarray, k: int, params: SearchParams) -> tuple[np.ndarray, np.ndarray]:
        # Tombstones are filtered by SQL afterwards: fetch that many more.
        return self.vectors.search(queries, k + self.info.dead, params)

    @cached_property
    def _id_order(self) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(self.ids, kind="stable")
        return self.ids[order], order

    def positions_of(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions in this segment, ids) of those of the sorted `ids` this segment holds: a
        binary search per id, so a filter's matching set is split over segments in O(m log n)."""
        sorted_ids, order = self._id_order
        if not len(sorted_ids) or not len(ids):
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        at = np.searchsorted(sorted_ids, ids)
        at[at == len(sorted_ids)] = 0
        held = sorted_ids[at] == ids
        return order[at[held]], ids[held]

    @cached_property
    def flat_vectors(self) -> np.ndarray | None:
        """The segment's vectors in id order as one read-only array view, where FAISS stores them
        uncompressed (Flat, HNSW's storage): exact filtered search reads them without copying
        the index. None for IVF and codes (their vectors are reconstructed)."""
        from indexes.faisslib import load_faiss

        faiss = load_faiss()
        inner = self.vectors.index
        if not hasattr(inner, "id_map") or not np.array_equal(faiss.vector_to_array(inner.id_map), self.ids):
            return None
        inner = faiss.downcast_index(inner.index)
        if isinstance(inner, faiss.IndexHNSW):
            inner = faiss.downcast_index(inner.storage)
        if not isinstance(inner, faiss.IndexFlat) or inner.ntotal != len(self.ids):
            return None
        view = faiss.rev_swig_ptr(inner.get_xb(), inner.ntotal * inner.d)
        return np.asarray(view).reshape(inner.ntotal, inner.d)

    def vectors_of(self, ids: np.ndarray) -> np.ndarray:
        """Stored vectors of `ids` (all in this segment), decoded from FAISS (`stored_vectors`: an
        IVF builds its id -> list map on first use, so the first call is serialised: a loaded
        segment is shared by every thread of a reader)."""
        with self._reading:
            return stored_vectors(self.vectors, ids)


def same_tier(lives: Sequence[int]) -> bool:
    """Sizes within one factor of MERGE_FACTOR of each other: one tier of the log-structured
    policy (batches vary in size, so tiers are spans, not exact powers)."""
    return max(lives) < MERGE_FACTOR * max(1, min(lives))


def plan_merges(segments: Sequence[SegmentInfo]) -> list[list[int]]:
    """Groups of positions to merge: the trailing MERGE_FACTOR segments when they are of one tier
    (repeated, as a carry propagates), and any segment whose tombstones exceed the threshold."""
    groups: list[list[int]] = []
    sizes = [(i, s.live) for i, s in enumerate(segments)]
    while len(sizes) >= MERGE_FACTOR and same_tier([live for _, live in sizes[-MERGE_FACTOR:]]):
        group = [i for i, _ in sizes[-MERGE_FACTOR:]]
        groups.append(group)
        merged_live = sum(live for _, live in sizes[-MERGE_FACTOR:])
        sizes = sizes[:-MERGE_FACTOR] + [(-len(groups), merged_live)]
    flat: list[list[int]] = []
    for group in groups:  # a later group may contain an earlier merge's placeholder
        members: list[int] = []
        for i in group:
            members.extend(flat[-i - 1] if i < 0 else [i])
        flat.append(members)
    final = [flat[-1]] if flat else []
    merged = {i for g in final for i in g}
    for i, s in enumerate(segments):
        if i not in merged and s.count and s.dead > COMPACT_DEAD_FRACTION * s.count:
            final.append([i])
    return final


def new_index(dim: int, factory: str, count: int, template: OnDiskIndex | None = None) -> VectorIndex:
    """The index for a segment of `count` vectors: a copy of `template` for an on-disk collection
    that has one, else the configured index when `count` can train it, else exact `Flat`."""
    if is_ondisk(factory) and template is not None:
        return OnDiskIndex.like(template)
    if count < training_size(dim, factory):
        return VectorIndex(dim, "Flat")
    return OnDiskIndex(dim, factory) if is_ondisk(factory) else VectorIndex(dim, factory)


def ondisk_template(segments: Sequence[Segment]) -> OnDiskIndex | None:
    """The first on-disk segment: its trained quantizer and codec are every later one's."""
    for segment in segments:
        if isinstance(segment.vectors, OnDiskIndex):
            return segment.vectors
    return None


def merge(
    folder: Path,
    name: str,
    parts: Sequence[Segment],
    keep: Sequence[np.ndarray],
    dim: int,
    factory: str,
    spec: KeywordSpec,
    template: OnDiskIndex | None = None,
) -> Segment:
    """One new segment with the kept chunks of `parts`; text is not re-analysed. In-memory parts'
    vectors are read back from FAISS (exact for Flat and HNSW, decoded codes for PQ/SQ); on-disk
    parts are not loaded: their lists are streamed into the new segment's data file, with the
    in-memory parts' vectors encoded by the shared quantizer."""
    from indexes.keyword import merge_term_segments

    terms = merge_term_segments([p.terms for p in parts], keep)
    faiss_file, bm25_file = segment_files(name)
    on_disk = [(p, mask) for p, mask in zip(parts, keep) if isinstance(p.vectors, OnDiskIndex)]
    in_memory = [(p, mask) for p, mask in zip(parts, keep) if not isinstance(p.vectors, OnDiskIndex)]
    template = template or ondisk_template(parts)
    if is_ondisk(factory) and template is not None:
        fresh = OnDiskIndex.like(template)
        if in_memory:
            fresh.add(
                np.concatenate([p.ids[mask] for p, mask in in_memory]),
                np.vstack([stored_vectors(p.vectors, p.ids[mask]) for p, mask in in_memory]),
            )
        sources: list[tuple[OnDiskIndex, np.ndarray | None]] = [
            (p.vectors, p.ids[~mask]) for p, mask in on_disk  # type: ignore[misc]
        ]
        if fresh.count():
            sources.append((fresh, None))
        terms.save(folder / bm25_file, spec)
        write_lists(folder / faiss_file, template, sources)
        index: VectorIndex = OnDiskIndex.load(folder / faiss_file, template.factory)
        return Segment(SegmentInfo(name, terms.count(), 0, index.factory), index, terms)
    vectors = np.vstack([stored_vectors(p.vectors, p.ids[mask]) for p, mask in zip(parts, keep)]) if parts else np.zeros((0, dim), np.float32)
    index = new_index(dim, factory, len(terms.ids))
    index.add(terms.ids, vectors)
    terms.save(folder / bm25_file, spec)
    index.save(folder / faiss_file)
    return Segment(SegmentInfo(name, terms.count(), 0, index.factory), index, terms)
