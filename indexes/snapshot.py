"""A published generation of one collection, immutable: its segments and the SQL rows it covers.

Readers search a snapshot and never write, repair, rebuild or lock. Every hit is hydrated from
SQL with the snapshot's own visibility rule (`visible_at(generation)`), so a search sees a batch
entirely or not at all: a replaced document is found in its old version until the generation
that replaces it is published, and in its new version from then on, never in neither.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import Select, bindparam, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

from indexes.config import CollectionConfig, SearchParams
from indexes.keyword import KeywordIndex, KeywordSpec
from indexes.schema import ChunkRow, DocumentRow, visible_at
from indexes.segments import Manifest, Segment
from indexes.types import Passage, Ranking

if TYPE_CHECKING:
    from indexes.owners import ChunkOwners

IN_BATCH = 5000  # stays under every backend's bound-parameter limit
OVERFETCH = 16


def batched(values: Sequence[Any], size: int = IN_BATCH) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


@dataclass(frozen=True)
class Snapshot:
    collection_id: int
    name: str
    config: CollectionConfig
    generation: int
    manifest: Manifest
    segments: tuple[Segment, ...]
    keyword_spec: KeywordSpec
    sessions: sessionmaker[Any]
    engine: Engine  # for the per-search reads that need no ORM session
    owners: ChunkOwners  # the collection's chunk id -> document id map
    unreadable: tuple[str, ...] = ()  # segments the manifest names that could not be read
    # Resolved filters of this snapshot: filter -> (metadata version, chunk ids) (indexes/filtered.py).
    filter_cache: dict[str, tuple[int, np.ndarray]] = field(default_factory=dict, compare=False, repr=False)

    # -- indexes -----------------------------------------------------------------------------
    def vector_count(self) -> int:
        return sum(s.vectors.count() for s in self.segments)

    def tombstones(self) -> int:
        return sum(s.info.dead for s in self.segments)

    def vector_ids(self) -> np.ndarray:
        parts = [s.vectors.ids() for s in self.segments]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    @cached_property
    def keyword_index(self) -> KeywordIndex:
        """Built once per snapshot (collection-wide statistics, analyzer and its stem cache)."""
        return KeywordIndex(self.keyword_spec, [s.terms for s in self.segments])

    @cached_property
    def live_chunks(self) -> tuple[np.ndarray, np.ndarray]:
        """(sorted chunk ids this generation shows, the document of each): what its segments hold
        less its tombstones (as an unfiltered search sees it) and any chunk SQL no longer has.
        Filters are resolved over these (indexes/matching.py)."""
        parts = [s.ids for s in self.segments]
        ids = np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
        if len(self.dead_ids):
            ids = ids[~np.isin(ids, self.dead_ids, assume_unique=True)]
        documents = self.owners.documents_of(ids)
        known = documents >= 0
        return ids[known], documents[known]

    @cached_property
    def dead_ids(self) -> np.ndarray:
        """Sorted chunk ids the segments still hold whose documents this generation removed
        (tombstones; merges drop them). Read from SQL once per snapshot, and only when the
        manifest counts some, so candidates are filtered without a query per search."""
        if not self.tombstones():
            return np.zeros(0, dtype=np.int64)
        with self.sessions() as session:
            found = session.scalars(
                select(ChunkRow.id)
                .join(DocumentRow)
                .where(DocumentRow.collection_id == self.collection_id, DocumentRow.removed_gen <= self.generation)
            ).all()
        return np.unique(np.asarray(found, dtype=np.int64))

    def live(self, found: Ranking, k: int) -> Ranking:
        """The first k of (scores, ids) that are not tombstones (nor FAISS's -1 padding)."""
        scores, ids = found
        keep = ids >= 0
        if len(self.dead_ids):
            keep &= ~np.isin(ids, self.dead_ids)
        return scores[keep][:k], ids[keep][:k]

    def dense(self, queries: np.ndarray, k: int, params: SearchParams | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """Top (k + over-fetch) (scores, ids) per query over all segments."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        chosen = (params or SearchParams()).over(self.config.search)
        wanted = k + OVERFETCH
        per_segment = [s.search(queries, wanted, chosen) for s in self.segments if s.vectors.count()]
        results: list[tuple[np.ndarray, np.ndarray]] = []
        for q in range(len(queries)):
            if not per_segment:
                results.append((np.zeros(0, np.float32), np.zeros(0, np.int64)))
                continue
            scores = np.concatenate([found[0][q] for found in per_segment])
            ids = np.concatenate([found[1][q] for found in per_segment])
            keep = ids >= 0
            scores, ids = scores[keep], ids[keep]
            order = np.lexsort((ids, -scores))[: wanted + self.tombstones()]
            results.append((scores[order], ids[order]))
        return results

    def keyword(self, queries: Sequence[str], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        return self.keyword_index.search(queries, k + OVERFETCH + self.tombstones())

    def vectors_of(self, chunk_ids: Sequence[int]) -> dict[int, np.ndarray]:
        """Stored vectors by chunk id, from whichever segment holds each."""
        wanted = np.asarray(list(chunk_ids), dtype=np.int64)
        found: dict[int, np.ndarray] = {}
        for segment in self.segments:
            mine = wanted[np.isin(wanted, segment.ids)]
            for cid, vector in zip(mine, segment.vectors_of(mine)):
                found[int(cid)] = vector
        return found

    # -- SQL ---------------------------------------------------------------------------------
    @cached_property
    def _rows_statement(self) -> Select[Any]:
        """Built once (not per search): constructing the statement cost more than running it."""
        return (
            select(
                ChunkRow.id,
                ChunkRow.document_id,
                ChunkRow.text,
                ChunkRow.start,
                ChunkRow.end,
                ChunkRow.ordinal,
                DocumentRow.source,
                DocumentRow.title,
                DocumentRow.external_id,
                DocumentRow.doc_metadata,
                DocumentRow.added_gen,
                DocumentRow.removed_gen,
                DocumentRow.collection_id,
            )
            .join(DocumentRow)
            # Only the chunk ids in SQL: with the document filters there too, SQLite walks
            # every document of the collection (~300 ms on SciFact instead of ~1 ms).
            .where(ChunkRow.id.in_(bindparam("ids", expanding=True)))
        )

    def passage_rows(self, chunk_ids: Sequence[int]) -> dict[int, tuple[Any, ...]]:
        """Chunk id -> row for chunks of documents visible in this generation."""
        rows: dict[int, tuple[Any, ...]] = {}
        g = self.generation
        if not len(chunk_ids):
            return rows
        # A plain connection: the rows are column tuples, so the ORM would only add its overhead.
        with self.engine.connect() as connection:
            for part in batched(list(chunk_ids)):
                for row in connection.execute(self._rows_statement, {"ids": list(part)}):
                    added, removed, owner = row[-3], row[-2], row[-1]
                    if owner == self.collection_id and added <= g and (removed is None or removed > g):
                        rows[int(row[0])] = tuple(row[:-3])
        return rows

    def passages(self, found: Sequence[Ranking], k: int) -> list[list[Passage]]:
        """(scores, chunk ids) per query -> the first k passages visible in this generation.

        Only the first k live candidates of each query are read from SQL (text, metadata); the
        rest only for a query some of whose first k turned out not to be visible (a row purged
        since this snapshot was loaded), so a search reads k rows, not every candidate's."""
        candidates = [self.live(f, len(f[1])) for f in found]
        rows = self.passage_rows(sorted({int(i) for _, ids in candidates for i in ids[:k]}))
        short = [ids[k:] for _, ids in candidates if len(ids) > k and sum(int(i) in rows for i in ids[:k]) < k]
        if short:
            rows.update(self.passage_rows(sorted({int(i) for ids in short for i in ids})))
        results: list[list[Passage]] = []
        for scores, ids in candidates:
            hits: list[Passage] = []
            for score, chunk_id in zip(scores, ids):
                row = rows.get(int(chunk_id))
                if row is None:
                    continue
                hits.append(_passage(row, float(score), len(hits) + 1))
                if len(hits) == k:
                    break
            results.append(hits)
        return results

    def visible_chunk_ids(self) -> set[int]:
        with self.sessions() as session:
            return set(
                session.scalars(
                    select(ChunkRow.id)
                    .join(DocumentRow)
                    .where(DocumentRow.collection_id == self.collection_id, visible_at(self.generation))
                )
            )


def _passage(row: tuple[Any, ...], score: float, rank: int) -> Passage:
    chunk_id, doc_id, text, start, end, ordinal, source, title, external_id, metadata = row
    return Passage(
        chunk_id=int(chunk_id),
        doc_id=int(doc_id),
        text=text,
        start=int(start),
        end=int(end),
        ordinal=int(ordinal),
        source=source,
        title=title or "",
        external_id=external_id,
        score=score,
        rank=rank,
        metadata=metadata or {},
    )
