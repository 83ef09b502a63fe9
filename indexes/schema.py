"""SQL tables: collections, documents, chunks and ingestion runs (SQLAlchemy 2.x, any backend).

Chunk primary keys are the FAISS ids. They are never reused (`sqlite_autoincrement`, and
sequences on PostgreSQL), so a vector left behind by a crash can never be mistaken for a new chunk.

Visibility is kept here, not in files: a collection row holds its published `generation` and the
`manifest` of index segments that generation searches; a document is visible at generation g when
`added_gen <= g` and it was not removed at or before g. A write batch stamps its rows with g + 1
and becomes visible when one UPDATE sets the collection's generation to g + 1.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Float, ForeignKey, Index, Integer, String, Text, event, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# SQLite wants INTEGER PRIMARY KEY for autoincrement; elsewhere chunk ids are 64-bit.
ChunkId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# Longest external id a document row holds (a JSONL record's id); the loaders skip longer ones.
EXTERNAL_ID_CHARS = 500
# "completed_with_errors" is 21 characters: the column was varchar(16), so on PostgreSQL every run
# with a skipped file failed to record its end (SQLite does not enforce the length).
RUN_STATUS_CHARS = 32


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class CollectionRow(Base):
    """`sqlite_autoincrement`: a dropped collection's id is never given to a new one, so a handle
    (or a writer lock, or a job) that outlived its collection can never reach another's rows."""

    __tablename__ = "collections"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Published generation and the index files it searches (segment names, sizes, home id).
    generation: Mapped[int] = mapped_column(Integer, default=0)
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The data home (`Store.home_id`) whose folder holds this collection's index files.
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Bumped in the transaction of every metadata change made without a new generation
    # (`Collection.set_metadata`): what a snapshot's resolved filters are valid for.
    metadata_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DocumentRow(Base):
    """Visible at generation g when `added_gen <= g` and `removed_gen` is null or above g.

    Live documents (`removed_gen` null, published or pending) have unique sources per collection.
    """

    __tablename__ = "documents"
    __table_args__ = (
        Index(
            "ux_documents_live_source",
            "collection_id",
            "source",
            unique=True,
            sqlite_where=text("removed_gen IS NULL"),
            postgresql_where=text("removed_gen IS NULL"),
        ),
        Index("ix_documents_collection_source", "collection_id", "source"),
        Index("ix_documents_collection_gen", "collection_id", "added_gen", "removed_gen"),
        Index("ix_documents_collection_external", "collection_id", "external_id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(Text)
    external_id: Mapped[str | None] = mapped_column(String(EXTERNAL_ID_CHARS), nullable=True)
    title: Mapped[str] = mapped_column(Text, default="")
    text: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(80))
    doc_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    added_gen: Mapped[int] = mapped_column(Integer)
    removed_gen: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # When the generation that removed it was published: a removed row is purged only once no
    # search can still hold a snapshot that shows it (`CollectionWriter.retain_removed`).
    removed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    chunks: Mapped[list[ChunkRow]] = relationship(
        back_populates="document", cascade="all, delete-orphan", passive_deletes=True
    )


class ChunkRow(Base):
    __tablename__ = "chunks"
    __table_args__ = (
        Index("ix_chunks_document", "document_id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(ChunkId, primary_key=True, autoincrement=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    collection_id: Mapped[int] = mapped_column(Integer, index=True)
    ordinal: Mapped[int] = mapped_column(Integer)
    start: Mapped[int] = mapped_column(Integer)
    end: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)

    document: Mapped[DocumentRow] = relationship(back_populates="chunks")


class DocumentFieldRow(Base):
    """One filterable metadata value of a document (a list gives one row per element): a
    key/value table indexed on (key, number) and (key, string), so every field a filter names
    is an index range scan on SQLite and PostgreSQL alike, whatever the field; the wide
    documents rows are never read to filter. The indexes carry kind and document_id too, so a
    condition is answered from index entries alone (a row read per entry made a cold 1% filter
    over 100,000 documents cost ~4 ms more; indexes/matching.py). Written with the document in the same transaction,
    rewritten by `Collection.set_metadata`, deleted with it (cascade).

    kind: "n" number, "b" boolean (number 0/1), "s" string (ISO dates compare as strings)."""

    __tablename__ = "document_fields"
    __table_args__ = (
        Index("ix_document_fields_key_number", "key", "number", "kind", "document_id"),
        Index("ix_document_fields_key_string", "key", "string", "kind", "document_id"),
        Index("ix_document_fields_document", "document_id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(ChunkId, primary_key=True, autoincrement=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(1))
    number: Mapped[float | None] = mapped_column(Float, nullable=True)
    string: Mapped[str | None] = mapped_column(String(512), nullable=True)


class RunRow(Base):
    """One `rag ingest` invocation: what it saw, did and failed on.

    status: running, completed, completed_with_errors, failed, or interrupted (the writer that
    next took the collection's lock found it still running: its process died)."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    status: Mapped[str] = mapped_column(String(RUN_STATUS_CHARS), default="running")
    stats: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    errors: Mapped[list[Any]] = mapped_column(JSON, default=list)


_SCHEMA_LOCK = 0x7261_6773  # "rags": the advisory lock key of schema creation


def create_schema(metadata: Any, engine: Engine) -> None:
    """Create `metadata`'s missing tables, one process at a time on PostgreSQL.

    `create_all` checks then creates, so two processes starting together on one PostgreSQL
    database (API replicas) race and one fails with a unique violation in `pg_type`; a
    transaction-level advisory lock makes the second wait and then find the tables made.
    (On SQLite the data home's file lock, held by `Store`, serialises processes.)
    """
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
        metadata.create_all(connection)
        if engine.dialect.name == "postgresql" and "runs" in metadata.tables:
            width = connection.execute(
                text(
                    "SELECT character_maximum_length FROM information_schema.columns "
                    "WHERE table_schema = current_schema() AND table_name = 'runs' AND column_name = 'status'"
                )
            ).scalar()
            if width is not None and width < RUN_STATUS_CHARS:  # a database made before the column was widened
                connection.execute(text(f"ALTER TABLE runs ALTER COLUMN status TYPE varchar({RUN_STATUS_CHARS})"))


# Indexes an older version made that a declared one now replaces (dropped when a database opens).
SUPERSEDED_INDEXES: dict[str, tuple[str, ...]] = {"document_fields": ("ix_document_fields_number", "ix_document_fields_string")}


def add_missing_columns(metadata: Any, engine: Engine) -> None:
    """Bring tables an older version created up to `metadata`: add the nullable columns a newer
    version declares, create the indexes it declares, drop those they replace.

    `create_all` never alters a table nor indexes one it did not create, and these (columns all
    nullable, so old rows stay valid) are the only schema changes between versions; anything
    else is refused where it is read."""
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
        present = inspect(connection)
        for table in metadata.sorted_tables:
            if not present.has_table(table.name):
                continue
            have = {c["name"] for c in present.get_columns(table.name)}
            for column in table.columns:
                if column.name not in have and column.nullable and not column.primary_key:
                    kind = column.type.compile(dialect=engine.dialect)
                    connection.execute(text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))
            indexes = {index["name"] for index in present.get_indexes(table.name)}
            for index in table.indexes:
                if index.name not in indexes:
                    index.create(connection, checkfirst=True)
            for name in SUPERSEDED_INDEXES.get(table.name, ()):
                if name in indexes:
                    connection.execute(text(f"DROP INDEX {name}"))


def configure_sqlite(engine: Engine) -> None:
    """WAL lets readers search while a writer commits; foreign keys make cascades real."""
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()


def visible_at(generation: int) -> Any:
    """SQL condition: the document is part of published generation `generation`."""
    from sqlalchemy import and_, or_

    return and_(
        DocumentRow.added_gen <= generation,
        or_(DocumentRow.removed_gen.is_(None), DocumentRow.removed_gen > generation),
    )
