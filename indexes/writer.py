"""The only code that changes a collection: lock, recover, write batches, publish.

`CollectionWriter` takes the collection's writer lock (`indexes.locking`), then recovers what a
crashed writer left (`recover`), then applies batches. A batch is:

1. one SQL transaction stamps it: new documents and chunks inserted with `added_gen = g + 1`
   (SQL allocates the chunk ids), replaced and deleted documents marked `removed_gen = g + 1`;
   nothing of it is visible yet, because readers see generation g;
2. one new immutable segment (FAISS + BM25 over the new chunks) is written beside the others,
   merged or compacted by the segment policy, each file saved atomically;
3. one UPDATE publishes: the collection row's generation becomes g + 1 and its manifest names the
   segments, so additions, replacements and deletions become visible together. The rows it
   removes get their `removed_at`; removed rows are deleted once they have been removed for
   `retain_removed` (a search holding an older snapshot may span several publishes: API jobs
   publish once per file), and segment files that neither generation g nor g + 1 names are
   deleted afterwards.

A crash before step 3 leaves generation g published and intact: the next writer deletes rows
stamped above g, clears `removed_gen` above g, and deletes files no manifest names (temporary
files of an interrupted atomic save included; the previous generation's files, which the manifest
lists as `retained`, are no crash's and stay). Runs still marked running are marked interrupted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
from sqlalchemy import CursorResult, Result, delete, insert, or_, select, update

from indexes.config import CollectionConfig
from indexes.errors import InvalidInput, RagError
from indexes.failpoints import failpoint
from indexes.handles import CollectionHandle
from indexes.keyword import KeywordSpec
from indexes.locking import WriterLock
from indexes.metadata import write_filter_rows
from indexes.ondisk import DATA_SUFFIX
from indexes.schema import ChunkRow, CollectionRow, DocumentRow, RunRow, utcnow
from indexes.segments import Manifest, Segment, SegmentMissing, merge, ondisk_template, plan_merges, segment_files
from indexes.snapshot import batched
from indexes.types import Chunk, Document

log = logging.getLogger(__name__)


def _rowcount(result: Result[Any]) -> int:
    """Rows an UPDATE matched (`execute` is typed as returning a plain Result; DML gives a CursorResult)."""
    return cast(CursorResult[Any], result).rowcount


@dataclass
class NewDocument:
    """A parsed, chunked and embedded document ready to be written."""

    document: Document
    content_hash: str
    chunks: list[Chunk]
    vectors: np.ndarray


T = TypeVar("T")


def last_wins(items: Iterable[T], source: Callable[[T], str]) -> tuple[list[T], list[str]]:
    """One item per source, the last given, in the order the kept items came; and the sources
    that were repeated, in the order of their first repeat. Ingestion (documents of one file or
    request) and the writer (a batch) use the same rule, as a re-ingest would apply it."""
    by_source: dict[str, T] = {}
    repeated: list[str] = []
    for item in items:
        key = source(item)
        if key in by_source and key not in repeated:
            repeated.append(key)
        by_source.pop(key, None)
        by_source[key] = item
    return list(by_source.values()), repeated


@dataclass
class _Stamped:
    """What step 1 of a batch stamped: replaced and deleted document ids, new chunk ids, and the
    chunk ids of the documents it removed."""

    superseded: list[int]
    deleted: list[int]
    chunk_ids: list[int]
    removed_chunks: np.ndarray


class CollectionWriter:
    """Exclusive writer of one collection; use through `Collection.writer()`."""

    # How long removed rows outlive the publish that removed them: longer than any search holds
    # its snapshot between its candidate lookup and its SQL read.
    retain_removed = timedelta(minutes=5)

    def __init__(self, collection: CollectionHandle) -> None:
        self.collection = collection
        self.store = collection.store
        self.config: CollectionConfig = collection.config
        self.folder: Path = collection.folder
        self.keyword_spec: KeywordSpec = collection.keyword_spec
        self.lock = WriterLock(self.store.engine, collection.id, collection.name)
        self.generation = 0
        self.manifest = Manifest(home=self.store.home_id)
        self.segments: list[Segment] = []
        self.missing: list[str] = []
        # Rows stamped above the published generation that neither a publish nor an unstamp has
        # settled: a writer in this state refuses to write again (reopen it: recovery cleans up).
        self._dirty = False

    # -- session -----------------------------------------------------------------------------
    def open(self, timeout: float) -> None:
        self.lock.acquire(timeout)
        try:
            self._load()
            self.recover()
        except BaseException:
            self.lock.release()
            raise

    def close(self) -> None:
        self.lock.release()

    def _load(self) -> None:
        with self.store.sessions.begin() as session:
            row = session.get(CollectionRow, self.collection.id)
            if row is None or row.name != self.collection.name:
                raise self.collection.gone()  # before the folder is made: a dropped collection stays gone
            self.collection.require_owner(row.owner)
            if row.owner is None:
                row.owner = self.store.home_id
            self.generation = int(row.generation or 0)
            self.manifest = Manifest.from_dict(row.manifest, self.store.home_id)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.segments, self.missing = [], []
        for info in self.manifest.segments:
            try:
                self.segments.append(Segment.load(self.folder, info, mmap=False))
            except SegmentMissing as exc:
                log.warning("collection %s: %s", self.collection.name, exc)
                self.missing.append(info.name)

    # -- recovery ----------------------------------------------------------------------------
    def recover(self) -> dict[str, int]:
        """Roll back whatever a crashed writer stamped above the published generation, delete
        files no manifest names, and mark runs left running as interrupted."""
        cid = self.collection.id
        with self.store.sessions.begin() as session:
            unpublished, restored = self._unstamp(session)
            interrupted = _rowcount(
                session.execute(
                    update(RunRow)
                    .where(RunRow.collection_id == cid, RunRow.status == "running")
                    .values(status="interrupted", finished_at=utcnow())
                )
            )
        failpoint("recover:after-rollback")
        removed_files = self._delete_unnamed_files(self.manifest.kept_files())
        if unpublished or restored or removed_files or interrupted:
            log.warning(
                "collection %s: recovered an interrupted write (%d unpublished documents rolled back, %d "
                "un-deleted, %d stray files removed, %d runs marked interrupted)",
                self.collection.name,
                len(unpublished),
                restored,
                removed_files,
                interrupted,
            )
        return {"rolled_back": len(unpublished), "restored": int(restored or 0), "files": removed_files, "runs": int(interrupted or 0)}

    def _unstamp(self, session: Any) -> tuple[list[int], int]:
        """Undo every stamp above the published generation: delete the rows added above it and
        restore the rows removed above it. Returns (deleted document ids, restored count)."""
        g, cid = self.generation, self.collection.id
        unpublished = list(
            session.scalars(select(DocumentRow.id).where(DocumentRow.collection_id == cid, DocumentRow.added_gen > g))
        )
        for part in batched(unpublished):
            session.execute(delete(ChunkRow).where(ChunkRow.document_id.in_(part)))
            session.execute(delete(DocumentRow).where(DocumentRow.id.in_(part)))
        restored = _rowcount(
            session.execute(
                update(DocumentRow).where(DocumentRow.collection_id == cid, DocumentRow.removed_gen > g).values(removed_gen=None)
            )
        )
        return unpublished, int(restored or 0)

    def _discard_batch(self) -> None:
        """A batch failed after its rows were stamped: unstamp them now, so the next batch of this
        writer (which stamps the same generation) publishes none of them."""
        with self.store.sessions.begin() as session:
            self._unstamp(session)
        self._dirty = False
        self._delete_unnamed_files(self.manifest.kept_files())  # segments built for the failed batch

    def _delete_unnamed_files(self, keep: set[str]) -> int:
        removed = 0
        for path in self.folder.iterdir():
            if path.name in keep or not path.is_file() or path.name.endswith(".lock"):
                continue
            if path.name.startswith("seg-") or path.name.endswith(".tmp") or path.name in ("vectors.faiss", "keywords.npz"):
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    # -- writing -----------------------------------------------------------------------------
    def write(self, new: Sequence[NewDocument], delete_ids: Sequence[int] = ()) -> dict[str, Any]:
        """Add (or replace, by source) documents and delete others; visible together, in one step.

        Two documents with one source in `new`: the last wins, the source is reported under
        `duplicates`."""
        new, duplicates = last_wins(new, lambda item: item.document.source)
        for item in new:
            if not item.chunks:
                raise InvalidInput(f"{item.document.source}: no text to index")
            if item.vectors.shape != (len(item.chunks), self.config.dim):
                raise InvalidInput(f"{item.document.source}: vectors do not match chunks")
        if not new and not delete_ids:
            return {"added": 0, "replaced": 0, "deleted": 0, "chunks": 0, "duplicates": duplicates}
        if self._dirty:
            raise RagError(f"collection {self.collection.name!r}: an earlier failed write could not be undone; open a new writer")
        target = self.generation + 1
        sources = [item.document.source for item in new]
        self._dirty = True
        try:
            stamped = self._stamp(new, delete_ids, target)
            failpoint("write:after-pending", sources)
            self._build_and_publish(new, stamped.chunk_ids, stamped.removed_chunks, stamped.superseded + stamped.deleted)
        except BaseException:
            try:
                self._discard_batch()
            except Exception:  # the writer stays dirty; the original failure is the one to report
                log.exception("collection %s: could not undo a failed write", self.collection.name)
            raise
        self._dirty = False
        return {
            "added": len(new) - len(stamped.superseded),
            "replaced": len(stamped.superseded),
            "deleted": len(stamped.deleted),
            "chunks": len(stamped.chunk_ids),
            "duplicates": duplicates,
        }

    def _stamp(self, new: Sequence[NewDocument], delete_ids: Sequence[int], target: int) -> _Stamped:
        """Step 1: one transaction inserts `new` and marks replaced and deleted rows, all at `target`."""
        cid = self.collection.id
        sources = [item.document.source for item in new]
        with self.store.sessions.begin() as session:
            superseded: list[int] = []
            for part in batched(sources):
                superseded.extend(
                    session.scalars(
                        select(DocumentRow.id).where(
                            DocumentRow.collection_id == cid, DocumentRow.removed_gen.is_(None), DocumentRow.source.in_(part)
                        )
                    )
                )
            deleted: list[int] = []
            for part in batched(sorted(set(delete_ids) - set(superseded))):
                deleted.extend(
                    session.scalars(
                        select(DocumentRow.id).where(
                            DocumentRow.collection_id == cid, DocumentRow.removed_gen.is_(None), DocumentRow.id.in_(part)
                        )
                    )
                )
            gone = superseded + deleted
            for part in batched(gone):
                session.execute(update(DocumentRow).where(DocumentRow.id.in_(part)).values(removed_gen=target))
            doc_ids = (
                list(
                    session.scalars(
                        insert(DocumentRow).returning(DocumentRow.id, sort_by_parameter_order=True),
                        [
                            {
                                "collection_id": cid,
                                "source": item.document.source,
                                "external_id": item.document.external_id,
                                "title": item.document.title,
                                "text": item.document.text,
                                "content_hash": item.content_hash,
                                "doc_metadata": item.document.metadata,
                                "added_gen": target,
                            }
                            for item in new
                        ],
                    )
                )
                if new
                else []
            )
            write_filter_rows(session, cid, doc_ids, [item.document.metadata for item in new])
            chunk_rows = [
                {
                    "document_id": doc_id,
                    "collection_id": cid,
                    "ordinal": chunk.ordinal,
                    "start": chunk.start,
                    "end": chunk.end,
                    "text": chunk.text,
                }
                for doc_id, item in zip(doc_ids, new)
                for chunk in item.chunks
            ]
            chunk_ids = (
                list(session.scalars(insert(ChunkRow).returning(ChunkRow.id, sort_by_parameter_order=True), chunk_rows))
                if chunk_rows
                else []
            )
            removed_chunks = np.asarray(self._chunk_ids_of(session, gone), dtype=np.int64)
        return _Stamped(superseded, deleted, chunk_ids, removed_chunks)

    def _build_and_publish(
        self, new: Sequence[NewDocument], chunk_ids: list[int], removed_chunks: np.ndarray, removed: Sequence[int]
    ) -> None:
        """Steps 2 and 3: the new segment (merged by the policy), then one UPDATE publishes."""
        segments = list(self.segments)
        manifest = self.manifest
        if chunk_ids:
            texts = [_keyword_text(item.document.title, c.text) for item in new for c in item.chunks]
            segment, manifest = self._new_segment(
                manifest,
                lambda name: Segment.build(
                    self.folder,
                    name,
                    np.asarray(chunk_ids, dtype=np.int64),
                    np.vstack([item.vectors for item in new]),
                    texts,
                    self.config.dim,
                    self.config.index_factory,
                    self.keyword_spec,
                    ondisk_template(segments),
                ),
            )
            segments.append(segment)
        if len(removed_chunks):
            segments = [s.with_dead(s.info.dead + int(np.isin(s.ids, removed_chunks).sum())) for s in segments]
        segments, manifest = self._merge(segments, manifest)
        failpoint("write:after-faiss-save")
        self._publish(segments, manifest, removed)

    def delete(self, doc_ids: Sequence[int]) -> dict[str, Any]:
        return self.write([], doc_ids)

    def _new_segment(self, manifest: Manifest, build: Callable[[str], Segment]) -> tuple[Segment, Manifest]:
        name = f"seg-{manifest.next_segment:06d}"
        for stale in (*segment_files(name), f"{name}{DATA_SUFFIX}"):  # left by a crashed writer that never published it
            (self.folder / stale).unlink(missing_ok=True)
        segment = build(name)
        return segment, Manifest(manifest.home, manifest.segments, manifest.next_segment + 1)

    def _merge(self, segments: list[Segment], manifest: Manifest) -> tuple[list[Segment], Manifest]:
        groups = plan_merges([s.info for s in segments])
        if not groups:
            return segments, Manifest(manifest.home, tuple(s.info for s in segments), manifest.next_segment)
        live = self._live_chunk_ids() if any(segments[i].info.dead for g in groups for i in g) else None
        replaced: dict[int, Segment | None] = {}
        for group in groups:
            parts = [segments[i] for i in group]
            keep = [np.isin(p.ids, live) if live is not None and p.info.dead else np.ones(len(p.ids), bool) for p in parts]
            merged, manifest = self._new_segment(
                manifest,
                partial(
                    merge,
                    self.folder,
                    parts=parts,
                    keep=keep,
                    dim=self.config.dim,
                    factory=self.config.index_factory,
                    spec=self.keyword_spec,
                    template=ondisk_template(segments),
                ),
            )
            replaced[group[0]] = merged if merged.info.count else None
            for i in group[1:]:
                replaced[i] = None
        result: list[Segment] = []
        for i, segment in enumerate(segments):
            if i in replaced:
                if replaced[i] is not None:
                    result.append(replaced[i])  # type: ignore[arg-type]
            else:
                result.append(segment)
        return result, Manifest(manifest.home, tuple(s.info for s in result), manifest.next_segment)

    def _live_chunk_ids(self) -> np.ndarray:
        with self.store.sessions() as session:
            ids = session.scalars(
                select(ChunkRow.id)
                .join(DocumentRow)
                .where(DocumentRow.collection_id == self.collection.id, DocumentRow.removed_gen.is_(None))
            )
            return np.fromiter(ids, dtype=np.int64)

    def _publish(self, segments: list[Segment], manifest: Manifest, removed: Sequence[int] = ()) -> None:
        g, cid = self.generation, self.collection.id
        now = utcnow()
        previous_files = self.manifest.files()
        manifest = replace(manifest, retained=tuple(sorted(previous_files - manifest.files())))
        with self.store.sessions.begin() as session:
            published = _rowcount(
                session.execute(
                    update(CollectionRow)
                    .where(CollectionRow.id == cid, CollectionRow.generation == g)
                    .values(generation=g + 1, manifest=manifest.to_dict())
                )
            )
            if published != 1:
                raise RagError(f"collection {self.collection.name!r} changed under its writer; nothing was published")
            for part in batched(list(removed)):
                session.execute(update(DocumentRow).where(DocumentRow.id.in_(part)).values(removed_at=now))
            # Rows removed at g or before (no published generation shows them) and long enough ago
            # that no search still reads an older snapshot (rows of older versions have no time).
            old = list(
                session.scalars(
                    select(DocumentRow.id).where(
                        DocumentRow.collection_id == cid,
                        DocumentRow.removed_gen <= g,
                        or_(DocumentRow.removed_at.is_(None), DocumentRow.removed_at < now - self.retain_removed),
                    )
                )
            )
            for part in batched(old):
                session.execute(delete(ChunkRow).where(ChunkRow.document_id.in_(part)))
                session.execute(delete(DocumentRow).where(DocumentRow.id.in_(part)))
        self.generation = g + 1
        self.manifest = manifest
        self.segments = segments
        self._delete_unnamed_files(manifest.kept_files())
        self._refresh_statistics()

    def _refresh_statistics(self) -> None:
        """SQLite plans a filter from its table statistics, and has none until ANALYZE runs: without
        them it scans every document of the collection to test the filter (a 1%-selective filter
        over 50,000 documents: 17.5 ms cold), with them it starts from the matching metadata rows
        (3.2 ms). `analysis_limit` samples each index, so this costs ~2 ms whatever the size.
        PostgreSQL's autovacuum keeps its own statistics. A failure here costs speed only."""
        from sqlalchemy.exc import SQLAlchemyError

        engine = self.store.engine
        if engine.dialect.name != "sqlite":
            return
        try:
            with engine.begin() as connection:
                connection.exec_driver_sql("PRAGMA analysis_limit=1000")
                connection.exec_driver_sql("ANALYZE")
        except SQLAlchemyError as exc:
            log.warning("could not refresh SQLite's statistics after publishing: %s", exc)

    # -- repair ------------------------------------------------------------------------------
    def repair(self, embed: Callable[[list[str]], np.ndarray]) -> None:
        """Drop unreadable segments from the manifest and re-embed every visible chunk no segment
        holds; publishes a new generation when anything changed."""
        held = {int(i) for s in self.segments for i in s.ids}
        with self.store.sessions() as session:
            rows = session.execute(
                select(ChunkRow.id, ChunkRow.text, DocumentRow.title)
                .join(DocumentRow)
                .where(DocumentRow.collection_id == self.collection.id, DocumentRow.removed_gen.is_(None))
                .order_by(ChunkRow.id)
            ).all()
        lost = [r for r in rows if int(r[0]) not in held]
        if not lost and not self.missing:
            return
        segments = list(self.segments)
        manifest = Manifest(self.manifest.home, tuple(s.info for s in segments), self.manifest.next_segment)
        if lost:
            vectors = embed([self.collection.embedding_text(title, text) for _, text, title in lost])
            segment, manifest = self._new_segment(
                manifest,
                lambda name: Segment.build(
                    self.folder,
                    name,
                    np.asarray([r[0] for r in lost], dtype=np.int64),
                    vectors,
                    [_keyword_text(title, text) for _, text, title in lost],
                    self.config.dim,
                    self.config.index_factory,
                    self.keyword_spec,
                    ondisk_template(segments),
                ),
            )
            segments.append(segment)
        self.missing = []
        self._publish(segments, Manifest(manifest.home, tuple(s.info for s in segments), manifest.next_segment))

    @staticmethod
    def _chunk_ids_of(session: Any, doc_ids: Sequence[int]) -> list[int]:
        found: list[int] = []
        for part in batched(list(doc_ids)):
            found.extend(session.scalars(select(ChunkRow.id).where(ChunkRow.document_id.in_(part))))
        return found


def _keyword_text(title: str, text: str) -> str:
    return f"{title} {text}" if title else text
