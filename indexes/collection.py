"""One collection as readers see it: the published snapshot, document lookups, stats.

Reading never writes, repairs, rebuilds or locks. Each search asks SQL for the published
generation (one indexed row) and swaps to a new snapshot when a writer has published one; segments
already loaded are reused (they never change). Writing goes through `writer()`, the only door to
`CollectionWriter`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
from sqlalchemy import and_, func, select, update

from indexes.config import CollectionConfig, SearchParams
from indexes.consistency import ConsistencyReport, check
from indexes.encoder import EncoderSpec
from indexes.errors import CollectionNotFound, DocumentNotFound, EncoderMismatch, InvalidInput, RagError
from indexes.filters import Where
from indexes.handles import StoreHandle
from indexes.keyword import KeywordSpec
from indexes.matching import matching_chunk_ids
from indexes.owners import ChunkOwners
from indexes.schema import ChunkRow, CollectionRow, DocumentRow, RunRow, utcnow, visible_at
from indexes.segments import Manifest, Segment, SegmentMissing
from indexes.snapshot import Snapshot, batched
from indexes.types import Passage, Ranking
from indexes.writer import CollectionWriter, NewDocument

RefKind = Literal["id", "external_id", "source"]


class CollectionElsewhere(RagError):
    """The collection's index files live in another data home."""

    code = "collection_elsewhere"


class Collection:
    """Documents, chunks and index segments of one collection."""

    def __init__(self, store: StoreHandle, id: int, name: str, config: CollectionConfig) -> None:
        self.store = store
        self.id = id
        self.name = name
        self.config = config
        self.folder: Path = store.home / "collections" / name
        self.keyword_spec = KeywordSpec()
        self._snapshot: Snapshot | None = None
        self._segments: dict[str, Segment] = {}
        self._owners = ChunkOwners(store.engine, id)
        self._loading = threading.Lock()
        self._local = threading.local()  # the writer this thread holds, if any
        # Id and name together: a handle whose collection was dropped (and whose id an old SQLite
        # database may have given to another collection) finds no row and says so.
        self._identity = and_(CollectionRow.id == id, CollectionRow.name == name)
        # Every search asks for the published generation: the statement is built once.
        self._generation_statement = select(CollectionRow.generation, CollectionRow.owner).where(self._identity)

    # -- identity ----------------------------------------------------------------------------
    def require_encoder(self, spec: EncoderSpec) -> None:
        if spec.identity() != self.config.encoder.identity():
            raise EncoderMismatch(
                f"collection {self.name!r} was built with {self.config.encoder.model} "
                f"(pooling={self.config.encoder.pooling}, normalize={self.config.encoder.normalize}); "
                f"it cannot be used with {spec.model} (pooling={spec.pooling}, normalize={spec.normalize})"
            )

    def gone(self) -> CollectionNotFound:
        """The error of a handle whose collection was dropped since it was opened."""
        return CollectionNotFound(f"collection {self.name!r} was deleted")

    def require_owner(self, owner: str | None) -> None:
        if owner is not None and owner != self.store.home_id:
            raise CollectionElsewhere(
                f"collection {self.name!r} is stored in another data home (id {owner}); this one "
                f"({self.store.home}, id {self.store.home_id}) holds none of its index files and may not write it"
            )

    def embedding_text(self, title: str, text: str) -> str:
        """What the encoder sees for a chunk (`CollectionConfig.embedding_text`)."""
        return self.config.embedding_text(title, text)

    # -- snapshots ---------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """The published generation; a new one is loaded when a writer has published since."""
        # Asked on every search: a plain connection, not an ORM session (a third of the cost).
        with self.store.engine.connect() as connection:
            row = connection.execute(self._generation_statement).first()
        if row is None:
            raise self.gone()
        generation, owner = int(row[0] or 0), row[1]
        current = self._snapshot
        if current is not None and current.generation == generation:
            return current
        self.require_owner(owner)
        with self._loading:
            if self._snapshot is not None and self._snapshot.generation == generation:
                return self._snapshot
            self._snapshot = self._load_snapshot()
            return self._snapshot

    def _load_snapshot(self) -> Snapshot:
        for _ in range(5):  # a writer may publish twice and delete files between our two reads
            with self.store.sessions() as session:
                found = session.execute(select(CollectionRow.generation, CollectionRow.manifest).where(self._identity)).first()
            if found is None:
                raise self.gone()
            generation, manifest_data = found
            manifest = Manifest.from_dict(manifest_data, self.store.home_id)
            segments: list[Segment] = []
            unreadable: list[str] = []
            for info in manifest.segments:
                cached = self._segments.get(info.name)
                if cached is None:
                    try:
                        cached = Segment.load(self.folder, info, mmap=self.store.mmap)
                    except SegmentMissing:
                        unreadable.append(info.name)
                        continue
                segments.append(cached.with_dead(info.dead))
            if unreadable:
                with self.store.sessions() as session:
                    now = session.scalar(select(CollectionRow.generation).where(CollectionRow.id == self.id))
                if now != generation:
                    continue
            self._segments = {s.info.name: s for s in segments}
            return Snapshot(
                collection_id=self.id,
                name=self.name,
                config=self.config,
                generation=int(generation or 0),
                manifest=manifest,
                segments=tuple(segments),
                keyword_spec=self.keyword_spec,
                sessions=self.store.sessions,
                engine=self.store.engine,
                owners=self._owners,
                unreadable=tuple(unreadable),
            )
        raise RagError(f"collection {self.name!r} is changing too fast to open; try again")

    # -- search ------------------------------------------------------------------------------
    def search(
        self, queries: np.ndarray, k: int, params: SearchParams | None = None, where: Where | None = None
    ) -> list[list[Passage]]:
        """Top-k passages for each query vector, from one snapshot (among those matching `where`)."""
        if k < 1:
            raise InvalidInput("k must be at least 1")
        snap = self.snapshot()
        allowed = _allowed(snap, where)
        if allowed is not None:
            from indexes import filtered

            return snap.passages(filtered.dense(snap, queries, k, allowed, params), k)
        return snap.passages(snap.dense(queries, k, params), k)

    def keyword_search(self, queries: Sequence[str], k: int, where: Where | None = None) -> list[list[Passage]]:
        """Top-k passages per query by BM25, from one snapshot (among those matching `where`)."""
        if k < 1:
            raise InvalidInput("k must be at least 1")
        snap = self.snapshot()
        allowed = _allowed(snap, where)
        if allowed is not None:
            from indexes import filtered

            return snap.passages(filtered.keyword(snap, queries, k, allowed), k)
        return snap.passages(snap.keyword(queries, k), k)

    def hybrid_candidates(
        self, vectors: np.ndarray, queries: Sequence[str], k: int, params: SearchParams | None = None, where: Where | None = None
    ) -> tuple[Snapshot, list[Ranking], list[Ranking]]:
        """The first k live (scores, chunk ids) per query from FAISS and from BM25 of one snapshot,
        without touching SQL: the caller fuses them and reads only its winners with
        `snapshot.passages`, from the same snapshot. With `where`, both search only the
        matching chunks (indexes/matching.py resolves them)."""
        if k < 1:
            raise InvalidInput("k must be at least 1")
        snap = self.snapshot()
        allowed = _allowed(snap, where)
        if allowed is not None:
            from indexes import filtered

            return snap, filtered.dense(snap, vectors, k, allowed, params), filtered.keyword(snap, queries, k, allowed)
        dense = [snap.live(found, k) for found in snap.dense(vectors, k, params)]
        sparse = [snap.live(found, k) for found in snap.keyword(queries, k)]
        return snap, dense, sparse

    def passage_rows(self, chunk_ids: Sequence[int]) -> dict[int, tuple[Any, ...]]:
        return self.snapshot().passage_rows(chunk_ids)

    def stored_vectors(self, chunk_ids: Sequence[int]) -> dict[int, np.ndarray]:
        return self.snapshot().vectors_of(chunk_ids)

    def check(self) -> ConsistencyReport:
        """Compare SQL and the published segments id by id; changes nothing."""
        snap = self.snapshot()
        return check(snap, list(snap.unreadable))

    # -- documents ---------------------------------------------------------------------------
    def known_documents(self, sources: Iterable[str] | None = None, prefix: str | None = None) -> dict[str, tuple[int, str]]:
        """source -> (document id, content hash) of live documents, by exact sources or a prefix."""
        stmt = select(DocumentRow.source, DocumentRow.id, DocumentRow.content_hash).where(
            DocumentRow.collection_id == self.id, visible_at(self._generation())
        )
        found: dict[str, tuple[int, str]] = {}
        with self.store.sessions() as session:
            if sources is not None:
                for part in batched(list(dict.fromkeys(sources))):
                    for source, doc_id, digest in session.execute(stmt.where(DocumentRow.source.in_(part))):
                        found[source] = (doc_id, digest)
            else:
                if prefix is not None:
                    # Escaped LIKE: a folder name with '%' or '_' must not match its neighbours.
                    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                    stmt = stmt.where(DocumentRow.source.like(escaped + "%", escape="\\"))
                for source, doc_id, digest in session.execute(stmt):
                    found[source] = (doc_id, digest)
        return found

    def find_documents(self, ref: str | int, *, by: RefKind) -> list[int]:
        """Document ids for one reference of one stated kind: an internal id, an external id or
        a source (a path is also tried resolved). Kinds are never guessed: "12" as an external
        id is not document 12."""
        base = select(DocumentRow.id).where(DocumentRow.collection_id == self.id, visible_at(self._generation()))
        with self.store.sessions() as session:
            if by == "id":
                try:
                    wanted = int(ref)
                except ValueError:
                    raise InvalidInput(f"document id {ref!r} is not a number") from None
                ids = list(session.scalars(base.where(DocumentRow.id == wanted)))
            elif by == "external_id":
                ids = list(session.scalars(base.where(DocumentRow.external_id == str(ref))))
            elif by == "source":
                candidates = [str(ref)]
                path = Path(str(ref)).expanduser()
                if path.exists() or not path.is_absolute():
                    candidates.append(str(path.resolve()))
                ids = list(session.scalars(base.where(DocumentRow.source.in_(candidates))))
            else:
                raise InvalidInput(f"unknown reference kind {by!r}; use id, external_id or source")
        if not ids:
            label = {"id": "document id", "external_id": "external id", "source": "source"}[by]
            raise DocumentNotFound(f"no document with {label} {ref!r} in collection {self.name!r}")
        return ids

    def sources_of(self, doc_ids: Sequence[int]) -> dict[int, str]:
        """document id -> source, for naming the documents an ambiguous reference matched."""
        found: dict[int, str] = {}
        with self.store.sessions() as session:
            for part in batched(list(doc_ids)):
                stmt = select(DocumentRow.id, DocumentRow.source).where(DocumentRow.collection_id == self.id, DocumentRow.id.in_(part))
                found.update((int(i), str(source)) for i, source in session.execute(stmt))
        return found

    def documents(self, offset: int = 0, limit: int = 100, where: Where | None = None) -> list[dict[str, Any]]:
        """Live documents by id, those matching `where` when given (the search filter language)."""
        from indexes.filters import to_sql

        condition = to_sql(where, self.store.engine.dialect.name) if where else None
        with self.store.sessions() as session:
            counts = select(ChunkRow.document_id, func.count().label("n")).group_by(ChunkRow.document_id).subquery()
            statement = (
                select(DocumentRow, counts.c.n)
                .join(counts, counts.c.document_id == DocumentRow.id, isouter=True)
                .where(DocumentRow.collection_id == self.id, visible_at(self._generation()))
            )
            if condition is not None:
                statement = statement.where(condition)
            rows = session.execute(statement.order_by(DocumentRow.id).offset(offset).limit(limit))
            return [
                {
                    "id": doc.id,
                    "external_id": doc.external_id,
                    "source": doc.source,
                    "title": doc.title,
                    "chunks": n or 0,
                    "characters": len(doc.text),
                    "content_hash": doc.content_hash,
                    "metadata": doc.doc_metadata,
                    "created_at": doc.created_at.isoformat() if doc.created_at else None,
                }
                for doc, n in rows
            ]

    def set_metadata(self, doc_id: int, metadata: dict[str, Any], *, merge: bool = True, where: Where | None = None) -> dict[str, Any]:
        """Change a live document's metadata without re-embedding it, in one UPDATE under the
        writer lock: the next search's filter sees the new values, a running one the old ones.
        `merge` keeps keys not named (a None value removes a key); `where` (a key's mandatory
        filter) must match the document, else it is not found. Returns the new metadata."""
        from indexes.metadata import check_metadata, replace_filter_rows

        patch = check_metadata(metadata, allow_none=merge)
        with self.writer():
            with self.store.sessions.begin() as session:
                statement = select(DocumentRow).where(
                    DocumentRow.id == doc_id, DocumentRow.collection_id == self.id, DocumentRow.removed_gen.is_(None)
                )
                if where:
                    from indexes.filters import to_sql

                    statement = statement.where(to_sql(where, self.store.engine.dialect.name))
                doc = session.scalars(statement).first()
                if doc is None:
                    raise DocumentNotFound(f"no document {doc_id} in collection {self.name!r}")
                current = dict(doc.doc_metadata or {}) if merge else {}
                for key, value in patch.items():
                    if value is None:
                        current.pop(key, None)
                    else:
                        current[key] = value
                doc.doc_metadata = current
                replace_filter_rows(session, doc_id, current)
                session.execute(
                    update(CollectionRow)
                    .where(CollectionRow.id == self.id)
                    .values(metadata_version=func.coalesce(CollectionRow.metadata_version, 0) + 1)
                )
                if where:
                    session.flush()
                    still = session.scalar(statement.with_only_columns(DocumentRow.id))
                    if still is None:  # the transaction rolls back: the document stays as it was
                        raise InvalidInput("this change would move the document out of what your key may see")
                return dict(current)

    def document_text(self, doc_id: int) -> str:
        self._generation()  # the collection still exists (ids are never reused, so its rows are its own)
        with self.store.sessions() as session:
            text = session.scalar(
                select(DocumentRow.text).where(DocumentRow.id == doc_id, DocumentRow.collection_id == self.id)
            )
        if text is None:
            raise DocumentNotFound(f"no document {doc_id}")
        return text

    def _generation(self) -> int:
        with self.store.sessions() as session:
            found = session.execute(select(CollectionRow.generation).where(self._identity)).first()
        if found is None:
            raise self.gone()
        return int(found[0] or 0)

    def stats(self) -> dict[str, Any]:
        snap = self.snapshot()
        g = snap.generation
        with self.store.sessions() as session:
            docs = session.scalar(
                select(func.count()).where(DocumentRow.collection_id == self.id, visible_at(g))
            )
            chunks = session.scalar(
                select(func.count()).select_from(ChunkRow).join(DocumentRow).where(DocumentRow.collection_id == self.id, visible_at(g))
            )
            last_run = session.scalars(
                select(RunRow).where(RunRow.collection_id == self.id).order_by(RunRow.id.desc()).limit(1)
            ).first()
        index_bytes = 0
        for info in snap.manifest.segments:
            try:
                index_bytes += (self.folder / f"{info.name}.faiss").stat().st_size
            except FileNotFoundError:
                pass
        vectors = snap.vector_count() - snap.tombstones()
        factories = sorted({s.info.factory for s in snap.segments})
        return {
            "collection": self.name,
            "documents": int(docs or 0),
            "chunks": int(chunks or 0),
            "vectors": vectors,
            "index_factory": self.config.index_factory,
            "segments": [s.info.to_dict() for s in snap.segments],
            "segment_factories": factories,
            "generation": g,
            "encoder": self.config.encoder.to_dict(),
            "dim": self.config.dim,
            "chunk_tokens": self.config.chunk_tokens,
            "chunk_overlap": self.config.chunk_overlap,
            "search": {"nprobe": self.config.search.nprobe, "ef_search": self.config.search.ef_search},
            "index_bytes": index_bytes,
            "last_run": None
            if last_run is None
            else {"id": last_run.id, "status": last_run.status, "stats": last_run.stats, "errors": len(last_run.errors)},
        }

    # -- writing -----------------------------------------------------------------------------
    @contextmanager
    def writer(self, timeout: float = 600.0) -> Iterator[CollectionWriter]:
        """Hold the collection's writer lock (recovering first) for the duration of the block."""
        held: CollectionWriter | None = getattr(self._local, "writer", None)
        if held is not None:
            yield held  # nested use by the same thread
            return
        active = CollectionWriter(self)
        active.open(timeout)
        self._local.writer = active
        try:
            yield active
        finally:
            self._local.writer = None
            active.close()

    def _active(self) -> CollectionWriter:
        held: CollectionWriter | None = getattr(self._local, "writer", None)
        if held is None:
            raise RuntimeError("write outside Collection.writer()")
        return held

    def write(self, new: Sequence[NewDocument], delete_ids: Sequence[int] = ()) -> dict[str, Any]:
        """The active writer's `write` (see `CollectionWriter.write`)."""
        return self._active().write(new, delete_ids)

    def delete(self, doc_ids: Sequence[int]) -> dict[str, Any]:
        return self._active().write([], doc_ids)

    def repair(self, embed: Callable[[list[str]], np.ndarray]) -> ConsistencyReport:
        self._active().repair(embed)
        return self.check()

    # -- runs --------------------------------------------------------------------------------
    def start_run(self) -> int:
        from indexes.runs import start_run

        return start_run(self.store.sessions, self.id)

    def finish_run(self, run_id: int, status: str, stats: dict[str, Any], errors: list[dict[str, str]]) -> None:
        from indexes.runs import finish_run

        finish_run(self.store.sessions, run_id, status, stats, errors)


__all__ = ["Collection", "CollectionElsewhere", "NewDocument", "utcnow"]


def _allowed(snap: Snapshot, where: Where | None) -> np.ndarray | None:
    """The chunk ids a filtered search may return, or None to search unfiltered: no filter, or
    one every visible chunk matches (the ids split over segments cost 5 ms at 100,000 for nothing)."""
    if not where:
        return None
    allowed = matching_chunk_ids(snap, where)
    return None if len(allowed) == len(snap.live_chunks[0]) else allowed
