"""The one place that writes SQL and FAISS, and the protocol that keeps them in step.

Invariant: every chunk of a `ready` document has exactly one vector in FAISS under its id, and
FAISS holds no other id once a write has finished. A write is three steps:

1. one SQL transaction inserts new documents and chunks as `pending` (SQL allocates the ids) and
   marks documents to delete as `deleting`;
2. FAISS gains the new vectors, loses the old ones, and is saved atomically (rename);
3. one SQL transaction marks the new documents `ready` and deletes superseded and deleted rows.

A crash anywhere leaves a state `recover()` finishes or rolls back: a pending document whose
vectors the saved FAISS holds is committed (the rename happened), one whose vectors it lacks is
dropped (and comes back on the next ingest), `deleting` rows are deleted, and FAISS ids unknown
to SQL are removed. One writer per collection holds a file lock; readers never block.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from filelock import FileLock, Timeout
from sqlalchemy import create_engine, delete, func, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from indexes.encoder import EncoderSpec
from indexes.failpoints import failpoint
from indexes.errors import CollectionNotFound, DocumentNotFound, EncoderMismatch, InvalidInput, RagError
from indexes.schema import Base, ChunkRow, CollectionRow, DocumentRow, RunRow, configure_sqlite, utcnow
from indexes.keyword import KeywordIndex, KeywordSpec
from indexes.types import Chunk, Document, Passage
from indexes.vector import VectorIndex

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_IN_BATCH = 5000  # stays under every backend's bound-parameter limit


def _batched(values: Sequence[int], size: int = _IN_BATCH) -> Iterator[Sequence[int]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


@dataclass(frozen=True)
class CollectionConfig:
    """What built a collection; a collection is only ever searched and extended with the same."""

    encoder: EncoderSpec
    dim: int
    index_factory: str = "Flat"
    chunk_tokens: int = 200
    chunk_overlap: int = 32
    title_in_embedding: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "encoder": self.encoder.to_dict(),
            "dim": self.dim,
            "index_factory": self.index_factory,
            "chunk_tokens": self.chunk_tokens,
            "chunk_overlap": self.chunk_overlap,
            "title_in_embedding": self.title_in_embedding,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CollectionConfig:
        return cls(
            encoder=EncoderSpec.from_dict(data["encoder"]),
            dim=int(data["dim"]),
            index_factory=data.get("index_factory", "Flat"),
            chunk_tokens=int(data.get("chunk_tokens", 200)),
            chunk_overlap=int(data.get("chunk_overlap", 32)),
            title_in_embedding=bool(data.get("title_in_embedding", True)),
        )


@dataclass
class NewDocument:
    """A parsed, chunked and embedded document ready to be written."""

    document: Document
    content_hash: str
    chunks: list[Chunk]
    vectors: np.ndarray


@dataclass
class ConsistencyReport:
    sql_chunks: int = 0
    faiss_vectors: int = 0
    missing_in_faiss: list[int] = field(default_factory=list)
    orphans_in_faiss: list[int] = field(default_factory=list)
    pending_documents: int = 0
    deleting_documents: int = 0
    keyword_chunks: int = 0
    keyword_present: bool = True
    missing_in_keyword: list[int] = field(default_factory=list)
    orphans_in_keyword: list[int] = field(default_factory=list)

    @property
    def consistent(self) -> bool:
        return not (
            self.missing_in_faiss
            or self.orphans_in_faiss
            or self.pending_documents
            or self.deleting_documents
            or self.missing_in_keyword
            or self.orphans_in_keyword
            or (self.sql_chunks and not self.keyword_present)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "consistent": self.consistent,
            "sql_chunks": self.sql_chunks,
            "faiss_vectors": self.faiss_vectors,
            "missing_in_faiss": len(self.missing_in_faiss),
            "orphans_in_faiss": len(self.orphans_in_faiss),
            "pending_documents": self.pending_documents,
            "deleting_documents": self.deleting_documents,
            "keyword_chunks": self.keyword_chunks,
            "keyword_present": self.keyword_present,
            "missing_in_keyword": len(self.missing_in_keyword),
            "orphans_in_keyword": len(self.orphans_in_keyword),
        }


class Store:
    """All collections of one data home and one database."""

    def __init__(self, home: Path, database_url: str | None = None, *, mmap: bool = False) -> None:
        self.home = Path(home).expanduser()
        self.home.mkdir(parents=True, exist_ok=True)
        url = database_url or f"sqlite:///{self.home / 'rag.db'}"
        self.engine: Engine = create_engine(url, pool_pre_ping=True)
        configure_sqlite(self.engine)
        with FileLock(str(self.home / ".schema.lock")):
            Base.metadata.create_all(self.engine)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.mmap = mmap
        self._open: dict[str, Collection] = {}

    def close(self) -> None:
        self.engine.dispose()

    def collection_names(self) -> list[str]:
        with self.sessions() as session:
            return list(session.scalars(select(CollectionRow.name).order_by(CollectionRow.name)))

    def collection(self, name: str) -> Collection:
        if name in self._open:
            return self._open[name]
        with self.sessions() as session:
            row = session.scalars(select(CollectionRow).where(CollectionRow.name == name)).first()
        if row is None:
            known = ", ".join(self.collection_names()) or "none yet"
            raise CollectionNotFound(f"no collection named {name!r} (collections: {known})")
        opened = Collection(self, row.id, row.name, CollectionConfig.from_dict(row.config))
        opened.verify_on_open()
        self._open[name] = opened
        return opened

    def create_collection(self, name: str, config: CollectionConfig) -> Collection:
        if not _NAME.match(name):
            raise InvalidInput(
                f"collection name {name!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
            )
        try:
            with self.sessions.begin() as session:
                session.add(CollectionRow(name=name, config=config.to_dict()))
        except IntegrityError:
            pass  # created concurrently: fine, open it
        return self.collection(name)

    def open_or_create(self, name: str, config: CollectionConfig) -> Collection:
        try:
            found = self.collection(name)
        except CollectionNotFound:
            return self.create_collection(name, config)
        found.require_encoder(config.encoder)
        return found

    def drop_collection(self, name: str) -> None:
        target = self.collection(name)
        with target.writer():
            with self.sessions.begin() as session:
                session.execute(delete(ChunkRow).where(ChunkRow.collection_id == target.id))
                session.execute(delete(DocumentRow).where(DocumentRow.collection_id == target.id))
                session.execute(delete(RunRow).where(RunRow.collection_id == target.id))
                session.execute(delete(CollectionRow).where(CollectionRow.id == target.id))
        shutil.rmtree(target.folder, ignore_errors=True)
        self._open.pop(name, None)


class Collection:
    """Documents, chunks and vectors of one collection."""

    def __init__(self, store: Store, id: int, name: str, config: CollectionConfig) -> None:
        self.store = store
        self.id = id
        self.name = name
        self.config = config
        self.folder = store.home / "collections" / name
        self.folder.mkdir(parents=True, exist_ok=True)
        self.index_path = self.folder / "vectors.faiss"
        self._lock = FileLock(str(self.folder / "write.lock"))
        self._index: VectorIndex | None = None
        self._index_stamp: tuple[int, int, int] | None = None
        self._writing = 0
        # BM25 is derived from SQL: rebuilt when a writer session that changed something ends.
        self.keyword_path = self.folder / "keywords.npz"
        self.keyword_spec = KeywordSpec()
        self._keyword: KeywordIndex | None = None
        self._keyword_stamp: tuple[object, ...] | None = None
        self._dirty = False

    # -- plumbing ----------------------------------------------------------------------------
    def require_encoder(self, spec: EncoderSpec) -> None:
        if spec.identity() != self.config.encoder.identity():
            raise EncoderMismatch(
                f"collection {self.name!r} was built with {self.config.encoder.model} "
                f"(pooling={self.config.encoder.pooling}, normalize={self.config.encoder.normalize}); "
                f"it cannot be used with {spec.model} (pooling={spec.pooling}, normalize={spec.normalize})"
            )

    def _stamp(self, path: Path | None = None) -> tuple[int, int, int] | None:
        try:
            st = (path or self.index_path).stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def vectors(self) -> VectorIndex:
        """The current FAISS generation; reloaded when a writer has saved a newer one."""
        if self._writing and self._index is not None:
            return self._index
        stamp = self._stamp()
        if self._index is None or stamp != self._index_stamp:
            if stamp is None:
                self._index = VectorIndex(self.config.dim, self.config.index_factory)
            else:
                mmap = self.store.mmap and not self._writing
                self._index = VectorIndex.load(self.index_path, self.config.index_factory, mmap=mmap)
            self._index_stamp = stamp
        return self._index

    def verify_on_open(self) -> None:
        """Compare counts (cheap); if they disagree and no writer is active, finish the
        interrupted write now rather than leaving it for the next ingest."""
        with self.store.sessions() as session:
            unsettled = session.scalar(
                select(func.count()).where(DocumentRow.collection_id == self.id, DocumentRow.status != "ready")
            )
            ready = self._ready_chunk_count(session)
        if not unsettled and ready == self.vectors().count():
            return
        try:
            with self.writer(timeout=0):
                report = self.check()
        except RagError:
            return  # a writer is at work; it recovers when it finishes or next time
        if not report.consistent:
            log.warning("collection %s: SQL and FAISS disagree (%s); run `rag doctor`", self.name, report.to_dict())

    @contextmanager
    def writer(self, timeout: float = 600.0) -> Iterator[Collection]:
        """Hold the collection's write lock; finishes any interrupted write first."""
        try:
            self._lock.acquire(timeout=timeout)
        except Timeout as exc:
            raise RagError(f"collection {self.name!r} is being written by another process; try again later") from exc
        self._writing += 1
        try:
            if self._writing == 1:
                self._index = None
                self.vectors()  # full (not memory-mapped) load for writing
                self.recover()
            yield self
        finally:
            try:
                if self._writing == 1 and self._dirty:
                    self._rebuild_keyword()
            except Exception:  # noqa: BLE001 - SQL and FAISS are committed; a stale BM25 is rebuilt on next use
                log.exception("collection %s: could not rebuild the keyword index", self.name)
            finally:
                self._writing -= 1
                if self._writing == 0:
                    self._index = None  # readers reload what was saved
                self._lock.release()

    def _require_writer(self) -> None:
        if not self._writing:
            raise RuntimeError("write outside Collection.writer()")

    def _save(self, index: VectorIndex) -> None:
        index.save(self.index_path)
        self._index_stamp = self._stamp()

    # -- reading metadata ---------------------------------------------------------------------
    def known_documents(self, sources: Iterable[str] | None = None, prefix: str | None = None) -> dict[str, tuple[int, str]]:
        """source -> (document id, content hash) of ready documents, by exact sources or a prefix."""
        stmt = select(DocumentRow.source, DocumentRow.id, DocumentRow.content_hash).where(
            DocumentRow.collection_id == self.id, DocumentRow.status == "ready"
        )
        found: dict[str, tuple[int, str]] = {}
        with self.store.sessions() as session:
            if sources is not None:
                wanted = list(dict.fromkeys(sources))
                for part in _batched(wanted):  # type: ignore[arg-type]
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

    def find_documents(self, ref: str) -> list[int]:
        """Resolve a document id, external id or source path to ready document ids."""
        with self.store.sessions() as session:
            base = select(DocumentRow.id).where(DocumentRow.collection_id == self.id, DocumentRow.status == "ready")
            ids: list[int] = []
            if ref.isdigit():
                ids = list(session.scalars(base.where(DocumentRow.id == int(ref))))
            if not ids:
                ids = list(session.scalars(base.where(DocumentRow.external_id == ref)))
            if not ids:
                candidates = [ref]
                path = Path(ref).expanduser()
                if path.exists() or not path.is_absolute():
                    candidates.append(str(path.resolve()))
                ids = list(session.scalars(base.where(DocumentRow.source.in_(candidates))))
        if not ids:
            raise DocumentNotFound(f"no document {ref!r} in collection {self.name!r}")
        return ids

    def documents(self, offset: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        with self.store.sessions() as session:
            counts = (
                select(ChunkRow.document_id, func.count().label("n")).group_by(ChunkRow.document_id).subquery()
            )
            rows = session.execute(
                select(DocumentRow, counts.c.n)
                .join(counts, counts.c.document_id == DocumentRow.id, isouter=True)
                .where(DocumentRow.collection_id == self.id, DocumentRow.status == "ready")
                .order_by(DocumentRow.id)
                .offset(offset)
                .limit(limit)
            )
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

    def document_text(self, doc_id: int) -> str:
        with self.store.sessions() as session:
            text = session.scalar(select(DocumentRow.text).where(DocumentRow.id == doc_id))
        if text is None:
            raise DocumentNotFound(f"no document {doc_id}")
        return text

    def stats(self) -> dict[str, Any]:
        with self.store.sessions() as session:
            docs = session.scalar(
                select(func.count()).where(DocumentRow.collection_id == self.id, DocumentRow.status == "ready")
            )
            chunks = self._ready_chunk_count(session)
            last_run = session.scalars(
                select(RunRow).where(RunRow.collection_id == self.id).order_by(RunRow.id.desc()).limit(1)
            ).first()
        return {
            "collection": self.name,
            "documents": int(docs or 0),
            "chunks": int(chunks or 0),
            "vectors": self.vectors().count(),
            "index_factory": self.vectors().factory,
            "encoder": self.config.encoder.to_dict(),
            "dim": self.config.dim,
            "chunk_tokens": self.config.chunk_tokens,
            "chunk_overlap": self.config.chunk_overlap,
            "index_bytes": self.index_path.stat().st_size if self.index_path.exists() else 0,
            "last_run": None
            if last_run is None
            else {"id": last_run.id, "status": last_run.status, "stats": last_run.stats, "errors": len(last_run.errors)},
        }

    # -- writing -----------------------------------------------------------------------------
    def write(self, new: Sequence[NewDocument], delete_ids: Sequence[int] = ()) -> dict[str, int]:
        """Add (or replace, by source) documents and delete others, as one crash-safe batch."""
        self._require_writer()
        if not new and not delete_ids:
            return {"added": 0, "replaced": 0, "deleted": 0, "chunks": 0}
        for item in new:
            if not item.chunks:
                raise InvalidInput(f"{item.document.source}: no text to index")
            if item.vectors.shape != (len(item.chunks), self.config.dim):
                raise InvalidInput(f"{item.document.source}: vectors do not match chunks")
        sources = [item.document.source for item in new]
        self._dirty = True
        with self.store.sessions.begin() as session:
            # Step 1: pending rows, ids allocated by SQL.
            doc_ids = list(
                session.scalars(
                    insert(DocumentRow).returning(DocumentRow.id, sort_by_parameter_order=True),
                    [
                        {
                            "collection_id": self.id,
                            "source": item.document.source,
                            "external_id": item.document.external_id,
                            "title": item.document.title,
                            "text": item.document.text,
                            "content_hash": item.content_hash,
                            "doc_metadata": item.document.metadata,
                            "status": "pending",
                        }
                        for item in new
                    ],
                )
            ) if new else []
            chunk_rows = [
                {
                    "document_id": doc_id,
                    "collection_id": self.id,
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
            superseded = self._ready_ids_for_sources(session, sources)
            gone = sorted(set(delete_ids) | set(superseded))
            if delete_ids:
                session.execute(
                    update(DocumentRow)
                    .where(DocumentRow.id.in_(list(delete_ids)), DocumentRow.collection_id == self.id)
                    .values(status="deleting")
                )
            old_chunk_ids = self._chunk_ids_of(session, gone)
        failpoint("write:after-pending")
        # Step 2: FAISS, saved atomically.
        index = self.vectors()
        index.remove(old_chunk_ids)
        if chunk_ids:
            index.add(np.asarray(chunk_ids, dtype=np.int64), np.vstack([item.vectors for item in new]))
        self._save(index)
        failpoint("write:after-faiss-save")
        # Step 3: publish.
        with self.store.sessions.begin() as session:
            if doc_ids:
                session.execute(update(DocumentRow).where(DocumentRow.id.in_(doc_ids)).values(status="ready"))
            self._delete_rows(session, gone)
        return {
            "added": len(new) - len(superseded),
            "replaced": len(superseded),
            "deleted": len(delete_ids),
            "chunks": len(chunk_ids),
        }

    def delete(self, doc_ids: Sequence[int]) -> dict[str, int]:
        return self.write([], doc_ids)

    def _ready_ids_for_sources(self, session: Session, sources: Sequence[str]) -> list[int]:
        found: list[int] = []
        for part in _batched(list(sources)):  # type: ignore[arg-type]
            found.extend(
                session.scalars(
                    select(DocumentRow.id).where(
                        DocumentRow.collection_id == self.id,
                        DocumentRow.status == "ready",
                        DocumentRow.source.in_(part),
                    )
                )
            )
        return found

    @staticmethod
    def _chunk_ids_of(session: Session, doc_ids: Sequence[int]) -> list[int]:
        found: list[int] = []
        for part in _batched(list(doc_ids)):
            found.extend(session.scalars(select(ChunkRow.id).where(ChunkRow.document_id.in_(part))))
        return found

    @staticmethod
    def _delete_rows(session: Session, doc_ids: Sequence[int]) -> None:
        for part in _batched(list(doc_ids)):
            session.execute(delete(ChunkRow).where(ChunkRow.document_id.in_(part)))
            session.execute(delete(DocumentRow).where(DocumentRow.id.in_(part)))

    # -- consistency -------------------------------------------------------------------------
    def _ready_chunk_count(self, session: Session) -> int:
        return int(
            session.scalar(
                select(func.count())
                .select_from(ChunkRow)
                .join(DocumentRow)
                .where(DocumentRow.collection_id == self.id, DocumentRow.status == "ready")
            )
            or 0
        )

    def _ready_chunk_ids(self, session: Session) -> set[int]:
        return set(
            session.scalars(
                select(ChunkRow.id)
                .join(DocumentRow)
                .where(DocumentRow.collection_id == self.id, DocumentRow.status == "ready")
            )
        )

    def check(self) -> ConsistencyReport:
        """Compare SQL and FAISS id by id; changes nothing."""
        index = self.vectors()
        faiss_ids = set(index.ids().tolist())
        with self.store.sessions() as session:
            ready = self._ready_chunk_ids(session)
            pending = session.scalar(
                select(func.count()).where(DocumentRow.collection_id == self.id, DocumentRow.status == "pending")
            )
            deleting = session.scalar(
                select(func.count()).where(DocumentRow.collection_id == self.id, DocumentRow.status == "deleting")
            )
        keyword_ids = KeywordIndex.read_ids(self.keyword_path)
        keyword = set() if keyword_ids is None else set(keyword_ids.tolist())
        return ConsistencyReport(
            sql_chunks=len(ready),
            faiss_vectors=index.count(),
            missing_in_faiss=sorted(ready - faiss_ids),
            orphans_in_faiss=sorted(faiss_ids - ready),
            pending_documents=int(pending or 0),
            deleting_documents=int(deleting or 0),
            keyword_chunks=len(keyword),
            keyword_present=keyword_ids is not None,
            missing_in_keyword=sorted(ready - keyword) if keyword_ids is not None else [],
            orphans_in_keyword=sorted(keyword - ready),
        )

    def recover(self) -> ConsistencyReport:
        """Finish or roll back interrupted writes and drop orphan vectors (needs the write lock).

        Chunks SQL calls ready but FAISS lacks are reported, not fixed: that needs the encoder
        (`repair`).
        """
        self._require_writer()
        index = self.vectors()
        faiss_ids = set(index.ids().tolist())
        with self.store.sessions.begin() as session:
            pending = list(
                session.scalars(
                    select(DocumentRow).where(DocumentRow.collection_id == self.id, DocumentRow.status == "pending")
                )
            )
            publish: list[int] = []
            drop: list[int] = []
            for doc in pending:
                ids = set(self._chunk_ids_of(session, [doc.id]))
                if ids and ids <= faiss_ids:
                    publish.append(doc.id)
                else:
                    drop.append(doc.id)
            published_sources = [doc.source for doc in pending if doc.id in publish]
            superseded = self._ready_ids_for_sources(session, published_sources)
            deleting = list(
                session.scalars(
                    select(DocumentRow.id).where(
                        DocumentRow.collection_id == self.id, DocumentRow.status == "deleting"
                    )
                )
            )
            gone = sorted(set(drop) | set(superseded) | set(deleting))
            keep = (self._ready_chunk_ids(session) - set(self._chunk_ids_of(session, gone))) | set(
                self._chunk_ids_of(session, publish)
            )
        orphans = sorted(faiss_ids - keep)
        if orphans:
            index.remove(orphans)
            self._save(index)
        failpoint("recover:after-faiss-save")
        with self.store.sessions.begin() as session:
            if publish:
                session.execute(update(DocumentRow).where(DocumentRow.id.in_(publish)).values(status="ready"))
            self._delete_rows(session, gone)
        if publish or gone or orphans or not self._keyword_current():
            self._dirty = True
            self._rebuild_keyword()
        if publish or gone or orphans:
            log.warning(
                "collection %s: finished an interrupted write (%d documents published, %d rolled back or "
                "deleted, %d orphan vectors removed)",
                self.name,
                len(publish),
                len(gone),
                len(orphans),
            )
        return self.check()

    def repair(self, embed: Callable[[list[str]], np.ndarray]) -> ConsistencyReport:
        """recover(), then re-embed ready chunks whose vectors are missing."""
        self._require_writer()
        report = self.recover()
        if report.missing_in_faiss:
            with self.store.sessions() as session:
                rows = []
                for part in _batched(report.missing_in_faiss):
                    rows.extend(
                        session.execute(
                            select(ChunkRow.id, ChunkRow.text, DocumentRow.title)
                            .join(DocumentRow)
                            .where(ChunkRow.id.in_(part))
                        )
                    )
            texts = [self.embedding_text(title, text) for _, text, title in rows]
            index = self.vectors()
            index.add(np.asarray([r[0] for r in rows], dtype=np.int64), embed(texts))
            self._save(index)
            report = self.check()
        return report

    # -- keyword index (derived from SQL) -----------------------------------------------------
    def _ready_fingerprint(self) -> tuple[int, int, int]:
        """(count, sum, max) of ready chunk ids: chunk ids are never reused, so any change moves it."""
        with self.store.sessions() as session:
            row = session.execute(
                select(func.count(ChunkRow.id), func.coalesce(func.sum(ChunkRow.id), 0), func.coalesce(func.max(ChunkRow.id), 0))
                .join(DocumentRow)
                .where(DocumentRow.collection_id == self.id, DocumentRow.status == "ready")
            ).one()
        return (int(row[0]), int(row[1]), int(row[2]))

    def _keyword_current(self) -> bool:
        meta = KeywordIndex.read_meta(self.keyword_path)
        return (
            meta is not None
            and tuple(meta.get("fingerprint", ())) == self._ready_fingerprint()
            and meta.get("spec") == self.keyword_spec.to_dict()
        )

    def _build_keyword(self, generation: int) -> KeywordIndex:
        fingerprint = self._ready_fingerprint()
        with self.store.sessions() as session:
            rows = session.execute(
                select(ChunkRow.id, DocumentRow.title, ChunkRow.text)
                .join(DocumentRow)
                .where(DocumentRow.collection_id == self.id, DocumentRow.status == "ready")
                .order_by(ChunkRow.id)
            ).all()
        # A concurrent writer cannot change SQL here: callers hold the write lock or only read.
        return KeywordIndex.build(
            [int(r[0]) for r in rows],
            [f"{r[1]} {r[2]}" if r[1] else r[2] for r in rows],
            self.keyword_spec,
            fingerprint=fingerprint,
            generation=generation,
        )

    def _rebuild_keyword(self) -> None:
        """Rebuild BM25 from the ready chunks and save it atomically (needs the write lock)."""
        self._require_writer()
        meta = KeywordIndex.read_meta(self.keyword_path) or {}
        keyword = self._build_keyword(int(meta.get("generation", 0)) + 1)
        keyword.save(self.keyword_path)
        self._keyword = keyword
        self._keyword_stamp = (self._stamp(self.keyword_path), self._stamp())
        self._dirty = False

    def keyword(self) -> KeywordIndex:
        """The current BM25 generation; reloaded when a newer one is saved, built if missing or stale."""
        if self._writing and self._keyword is not None:
            return self._keyword
        stamp = (self._stamp(self.keyword_path), self._stamp())
        if self._keyword is not None and stamp == self._keyword_stamp:
            return self._keyword
        if self._keyword_current():
            self._keyword = KeywordIndex.load(self.keyword_path)
        else:
            # Missing (a collection older than keyword search) or stale (a writer crashed before
            # rebuilding it): rebuild and save it unless a writer is busy; that writer saves a
            # fresh one as it finishes, and until then the saved (or a private) copy serves.
            try:
                self._lock.acquire(timeout=0)
            except Timeout:
                if self.keyword_path.exists():
                    self._keyword = KeywordIndex.load(self.keyword_path)
                elif self._keyword is None:
                    self._keyword = self._build_keyword(0)
            else:
                self._writing += 1
                try:
                    self._rebuild_keyword()
                finally:
                    self._writing -= 1
                    self._lock.release()
        self._keyword_stamp = (self._stamp(self.keyword_path), stamp[1])
        assert self._keyword is not None
        return self._keyword

    def keyword_search(self, queries: Sequence[str], k: int) -> list[list[Passage]]:
        """Top-k ready passages per query by BM25; every hit is checked against SQL."""
        if k < 1:
            raise InvalidInput("k must be at least 1")
        return self._ready_passages(self.keyword().search(queries, k + 16), k)

    def hybrid_search(
        self, vectors: np.ndarray, queries: Sequence[str], k: int
    ) -> tuple[list[list[Passage]], list[list[Passage]]]:
        """Top-k ready passages per query from FAISS and from BM25, checked in one SQL query."""
        if k < 1:
            raise InvalidInput("k must be at least 1")
        index = self.vectors()
        dense: list[tuple[np.ndarray, np.ndarray]] = (
            list(zip(*index.search(vectors, k + 16))) if index.count() else [(np.zeros(0), np.zeros(0))] * len(queries)
        )
        both = self._ready_passages(dense + self.keyword().search(queries, k + 16), k)
        return both[: len(queries)], both[len(queries) :]

    def _ready_passages(self, found: Sequence[tuple[np.ndarray, np.ndarray]], k: int) -> list[list[Passage]]:
        """(scores, chunk ids) per query -> the first k passages of ready documents."""
        rows = self.passage_rows(sorted({int(i) for _, ids in found for i in ids if i >= 0}))
        results: list[list[Passage]] = []
        for scores, ids in found:
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

    def embedding_text(self, title: str, text: str) -> str:
        """What the encoder sees for a chunk: the title first when configured (BEIR's recipe)."""
        if self.config.title_in_embedding and title:
            return f"{title} {text}"
        return text

    # -- search ------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int) -> list[list[Passage]]:
        """Top-k ready passages for each query vector."""
        if k < 1:
            raise InvalidInput("k must be at least 1")
        index = self.vectors()
        if index.count() == 0:
            return [[] for _ in range(len(queries))]
        # Over-fetch: vectors of documents being replaced or deleted are filtered out by SQL.
        scores, ids = index.search(queries, k + 16)
        return self._ready_passages(list(zip(scores, ids)), k)

    def passage_rows(self, chunk_ids: Sequence[int]) -> dict[int, tuple[Any, ...]]:
        """Chunk id -> row for chunks of ready documents."""
        rows: dict[int, tuple[Any, ...]] = {}
        with self.store.sessions() as session:
            for part in _batched(list(chunk_ids)):
                for row in session.execute(
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
                        DocumentRow.status,
                        DocumentRow.collection_id,
                    )
                    .join(DocumentRow)
                    # Only the chunk ids in SQL: with the document filters there too, SQLite walks
                    # every ready document of the collection (~300 ms on SciFact instead of ~1 ms).
                    .where(ChunkRow.id.in_(part))
                ):
                    if row[-2] == "ready" and row[-1] == self.id:
                        rows[int(row[0])] = tuple(row[:-2])
        return rows

    # -- runs --------------------------------------------------------------------------------
    def start_run(self) -> int:
        with self.store.sessions.begin() as session:
            run = RunRow(collection_id=self.id)
            session.add(run)
            session.flush()
            return run.id

    def finish_run(self, run_id: int, status: str, stats: dict[str, Any], errors: list[dict[str, str]]) -> None:
        with self.store.sessions.begin() as session:
            session.execute(
                update(RunRow)
                .where(RunRow.id == run_id)
                .values(status=status, stats=stats, errors=errors, finished_at=utcnow())
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
