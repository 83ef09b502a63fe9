"""The catalog: every collection of one database and one data home.

Creating a collection validates its whole config first (a bad factory string or chunk size is
refused before anything is stored); a collection whose stored config no longer loads is reported
by `broken()` and skipped by `collection_names()`, never fatal to the others, and `drop_collection`
removes any collection whole, broken ones included.

The data home has an id (`.rag-home-id`); the collection row records which home holds its index
files, so two data homes on one PostgreSQL database never write (or roll back) each other's
collections.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import uuid
from pathlib import Path

from filelock import FileLock
from sqlalchemy import bindparam, create_engine, delete, inspect, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError
from sqlalchemy.orm import sessionmaker

from indexes.collection import Collection, CollectionElsewhere
from indexes.config import CollectionConfig, SearchParams
from indexes.errors import CollectionNotFound, InvalidConfig, InvalidInput, RagError
from indexes.locking import WriterLock
from indexes.schema import Base, ChunkRow, CollectionRow, DocumentRow, RunRow, add_missing_columns, configure_sqlite, create_schema
from indexes.vector import exercise_factory
from indexes.writer import NewDocument

# Re-exported: what callers import from `indexes.store` (the catalog is their entry point).
__all__ = ["Collection", "CollectionConfig", "CollectionElsewhere", "CollectionUnusable", "NewDocument", "SearchParams", "Store"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # fullmatch: `$` would allow a final newline


class CollectionUnusable(RagError):
    """The collection's stored config no longer loads; `rag collections delete NAME` removes it."""

    code = "collection_unusable"


class Store:
    """All collections of one data home and one database."""

    def __init__(self, home: Path, database_url: str | None = None, *, mmap: bool = False) -> None:
        self.home = Path(home).expanduser()
        try:
            self.home.mkdir(parents=True, exist_ok=True)
            if not os.access(self.home, os.W_OK | os.X_OK):
                raise PermissionError(errno.EACCES, "permission denied")
        except OSError as exc:
            why = "it is a file, not a folder" if self.home.is_file() else (exc.strerror or str(exc)).lower()
            raise InvalidConfig(f"data home {self.home} cannot be used: {why}; set RAG_HOME to a writable folder") from None
        url = database_url or f"sqlite:///{self.home / 'rag.db'}"
        try:
            self.engine: Engine = create_engine(url, pool_pre_ping=True)
        except (ArgumentError, NoSuchModuleError, ImportError, ValueError) as exc:
            shown = url.split("@")[-1] if "@" in url else url  # never print a password
            raise InvalidConfig(
                f"database URL {shown!r} (RAG_DATABASE_URL) cannot be opened: {exc}; e.g. postgresql+psycopg://user@host/db"
            ) from None
        configure_sqlite(self.engine)
        with FileLock(str(self.home / ".schema.lock")):
            had_documents = inspect(self.engine).has_table("documents")
            new_fields = not inspect(self.engine).has_table("document_fields")
            create_schema(Base.metadata, self.engine)
            add_missing_columns(Base.metadata, self.engine)
            self.home_id = self._home_id()
        columns = {c["name"] for c in inspect(self.engine).get_columns("documents")}
        if had_documents and new_fields and "added_gen" in columns:
            from indexes.metadata import backfill_filter_rows

            with FileLock(str(self.home / ".schema.lock")):
                backfill_filter_rows(self.engine)  # a database made before filters had their table
        if "added_gen" not in columns:
            raise RagError(
                f"the database at {self.engine.url.render_as_string(hide_password=True)} was made by an older "
                "version of rag (no generations); ingest into a new data home or database"
            )
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.mmap = mmap
        self._open: dict[str, Collection] = {}
        self._id_statement = select(CollectionRow.id).where(CollectionRow.name == bindparam("name"))

    def _home_id(self) -> str:
        path = self.home / ".rag-home-id"
        if not path.exists():
            path.write_text(uuid.uuid4().hex + "\n", encoding="utf-8")
        return path.read_text(encoding="utf-8").strip()

    def close(self) -> None:
        self.engine.dispose()

    def _rows(self) -> list[CollectionRow]:
        with self.sessions() as session:
            return list(session.scalars(select(CollectionRow).order_by(CollectionRow.name)))

    def broken(self) -> dict[str, str]:
        """Collections whose stored config no longer loads: name -> reason."""
        found = {}
        for row in self._rows():
            try:
                CollectionConfig.from_dict(row.config)
            except RagError as exc:
                found[row.name] = str(exc)
        return found

    def collection_names(self) -> list[str]:
        """Usable collections (broken ones are listed by `broken()`)."""
        broken = self.broken()
        return [row.name for row in self._rows() if row.name not in broken]

    def collection(self, name: str) -> Collection:
        """The open handle of `name`, checked against SQL: another process may have dropped the
        collection (or dropped and re-created it under a new id) since it was opened."""
        cached = self._open.get(name)
        if cached is not None:
            # Every search asks: the id alone, not the row's config and manifest JSON.
            with self.engine.connect() as connection:
                current = connection.execute(self._id_statement, {"name": name}).scalar()
            if current == cached.id:
                return cached
        with self.sessions() as session:
            row = session.scalars(select(CollectionRow).where(CollectionRow.name == name)).first()
        self._open.pop(name, None)
        if row is None:
            # Names no other collection: the API shows this message to keys limited to one.
            raise CollectionNotFound(f"no collection named {name!r} (`rag collections` or GET /v1/collections lists them)")
        try:
            config = CollectionConfig.from_dict(row.config)
        except RagError as exc:
            raise CollectionUnusable(
                f"collection {name!r} cannot be opened: {exc}; remove it with `rag collections delete {name}`"
            ) from None
        opened = Collection(self, row.id, row.name, config)
        self._open[name] = opened
        return opened

    def create_collection(self, name: str, config: CollectionConfig) -> Collection:
        """Validate everything, then store the collection (or open it if created concurrently)."""
        if not _NAME.fullmatch(name):
            raise InvalidInput(
                f"collection name {name!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
            )
        config.validate()
        exercise_factory(config.index_factory, config.dim, config.search)
        try:
            with self.sessions.begin() as session:
                session.add(CollectionRow(name=name, config=config.to_dict(), owner=self.home_id, generation=0, manifest={}))
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

    def drop_collection(self, name: str, timeout: float = 600.0, *, only_if_empty: bool = False) -> bool:
        """Delete a collection whole: its rows, runs and index files (a broken one too).

        `only_if_empty` keeps it (and answers False) when it holds a document once its writer lock is
        held, so a writer that filled it meanwhile loses nothing."""
        with self.sessions() as session:
            row = session.scalars(select(CollectionRow).where(CollectionRow.name == name)).first()
        if row is None:
            raise CollectionNotFound(f"no collection named {name!r}")
        if row.owner is not None and row.owner != self.home_id:
            raise CollectionElsewhere(f"collection {name!r} is stored in another data home (id {row.owner}); delete it from there")
        lock = WriterLock(self.engine, row.id, name)
        lock.acquire(timeout)
        try:
            if only_if_empty:
                with self.sessions() as session:
                    now = session.get(CollectionRow, row.id)
                    if now is None or now.name != name:
                        return False  # dropped (and perhaps re-created) meanwhile: not ours to remove
                    if session.scalars(select(DocumentRow.id).where(DocumentRow.collection_id == row.id).limit(1)).first():
                        return False
            with self.sessions.begin() as session:
                doc_ids = select(DocumentRow.id).where(DocumentRow.collection_id == row.id)
                session.execute(delete(ChunkRow).where(ChunkRow.document_id.in_(doc_ids)))
                session.execute(delete(DocumentRow).where(DocumentRow.collection_id == row.id))
                session.execute(delete(RunRow).where(RunRow.collection_id == row.id))
                session.execute(delete(CollectionRow).where(CollectionRow.id == row.id))
            shutil.rmtree(self.home / "collections" / name, ignore_errors=True)
        finally:
            lock.release()
        self._open.pop(name, None)
        return True
