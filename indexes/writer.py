"""The only code that changes a collection: lock, recover, write batches, publish.

`CollectionWriter` takes the collection's writer lock (`indexes.locking`), then recovers what a
crashed writer left (`recover`), then applies batches. A batch is:

1. one SQL transaction stamps it: new documents and chunks inserted with `added_gen = g + 1`
   (SQL allocates the chunk ids), replaced and deleted documents marked `removed_gen = g + 1`;
   nothing of it is visible yet, because readers see generation g;
2. one new immutable segment (FAISS + BM25 over the new chunks) is written beside the others,
   merged or compacted by the segment policy, each file saved atomically;
3. one UPDATE publishes: the collection row's generation becomes g + 1 and its manifest names the
   segments, so additions, replacements and deletions become visible together. Rows removed one
   generation earlier are deleted in the same transaction (a reader still searching generation g
   needs rows removed at g + 1, not older ones), and segment files that neither generation g nor
   g + 1 names are deleted afterwards.

A crash before step 3 leaves generation g published and intact: the next writer deletes rows
stamped above g, clears `removed_gen` above g, and deletes files no manifest names (temporary
files of an interrupted atomic save included). Runs still marked running are marked interrupted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from sqlalchemy import CursorResult, Result, delete, insert, select, update

from indexes.config import CollectionConfig
from indexes.errors import InvalidInput, RagError
from indexes.failpoints import failpoint
from indexes.keyword import KeywordSpec
from indexes.locking import WriterLock
from indexes.metadata import write_filter_rows
from indexes.ondisk import DATA_SUFFIX
from indexes.schema import ChunkRow, CollectionRow, DocumentRow, RunRow, utcnow
from indexes.segments import Manifest, Segment, SegmentMissing, merge, ondisk_template, plan_merges, segment_files
from indexes.snapshot import batched
from indexes.types import Chunk, Document

if TYPE_CHECKING:
    from indexes.collection import Collection

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


def last_wins(new: Sequence[NewDocument]) -> tuple[list[NewDocument], list[str]]:
    """One document per source, the last given; and the sources that were repeated."""
    by_source: dict[str, NewDocument] = {}
    repeated: list[str] = []
    for item in new:
        source = item.document.source
        if source in by_source and source not in repeated:
            repeated.append(source)
        by_source.pop(source, None)
        by_source[source] = item
    return list(by_source.values()), repeated


class CollectionWriter:
    """Exclusive writer of one collection; use through `Collection.writer()`."""

    def __init__(self, collection: Collection) -> None:
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
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.store.sessions.begin() as session:
            row = session.get(CollectionRow, self.collection.id)
            if row is None:
                raise RagError(f"collection {self.collection.name!r} was deleted")
            self.collection.require_owner(row.owner)
            if row.owner is None:
                row.owner = self.store.home_id
            self.generation = int(row.generation or 0)
            self.manifest = Manifest.from_dict(row.manifest, self.store.home_id)
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
        g, cid = self.generation, self.collection.id
        with self.store.sessions.begin() as session:
            unpublished = list(
                session.scalars(select(DocumentRow.id).where(DocumentRow.collection_id == cid, DocumentRow.added_gen > g))
            )
            for part in batched(unpublished):
                session.execute(delete(ChunkRow).where(ChunkRow.document_id.in_(part)))
                session.execute(delete(DocumentRow).where(DocumentRow.id.in_(part)))
            restored = _rowcount(
                session.execute(
                    update(DocumentRow)
                    .where(DocumentRow.collection_id == cid, DocumentRow.removed_gen > g)
                    .values(removed_gen=None)
                )
            )
            interrupted = _rowcount(
                session.execute(
                    update(RunRow)
                    .where(RunRow.collection_id == cid, RunRow.status == "running")
                    .values(status="interrupted", finished_at=utcnow())
                )
            )
        failpoint("recover:after-rollback")
        removed_files = self._delete_unnamed_files(self.manifest.files())
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
        new, duplicates = last_wins(new)
        for item in new:
            if not item.chunks:
                raise InvalidInput(f"{item.document.source}: no text to index")
            if item.vectors.shape != (len(item.chunks), self.config.dim):
                raise InvalidInput(f"{item.document.source}: vectors do not match chunks")
        if not new and not delete_ids:
            return {"added": 0, "replaced": 0, "deleted": 0, "chunks": 0, "duplicates": duplicates}
        g, cid = self.generation, self.collection.id
        target = g + 1
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
        failpoint("write:after-pending")
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
        self._publish(segments, manifest)
        return {
            "added": len(new) - len(superseded),
            "replaced": len(superseded),
            "deleted": len(deleted),
            "chunks": len(chunk_ids),
            "duplicates": duplicates,
        }

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

    def _publish(self, segments: list[Segment], manifest: Manifest) -> None:
        g, cid = self.generation, self.collection.id
        previous_files = self.manifest.files()
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
            # Rows removed at g or before: no published generation still shows them.
            old = list(
                session.scalars(
                    select(DocumentRow.id).where(DocumentRow.collection_id == cid, DocumentRow.removed_gen <= g)
                )
            )
            for part in batched(old):
                session.execute(delete(ChunkRow).where(ChunkRow.document_id.in_(part)))
                session.execute(delete(DocumentRow).where(DocumentRow.id.in_(part)))
        self.generation = g + 1
        self.manifest = manifest
        self.segments = segments
        self._delete_unnamed_files(manifest.files() | previous_files)

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
