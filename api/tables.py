"""SQL tables the API owns: API keys and ingestion jobs.

They live in their own metadata, created with the store's engine, so keys and jobs sit in the same
database as the documents (SQLite or PostgreSQL) while `indexes` stays free of API concerns.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Integer, String, Text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from indexes.schema import add_missing_columns, create_schema, utcnow


class ApiBase(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class ApiKeyRow(ApiBase):
    """Only the SHA-256 of a key is stored; the key itself is shown once, at creation."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    scope: Mapped[str] = mapped_column(String(8))
    collection: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # A mandatory filter (indexes/filters.py) ANDed into every read the key makes: a tenant's scope.
    where_filter: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class JobRow(ApiBase):
    """status: queued, running, succeeded, completed_with_errors, failed. Rows made before `owner`
    existed have none and are failed by whichever server starts next, as before."""

    __tablename__ = "api_jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    collection: Mapped[str] = mapped_column(String(200), index=True)
    key_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The data home (`Store.home_id`) of the server that runs the job: a starting server fails
    # only its own interrupted jobs, never those of another server on the same database.
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    status: Mapped[str] = mapped_column(String(32), default="queued")
    kind: Mapped[str] = mapped_column(String(16))
    total: Mapped[int] = mapped_column(Integer, default=0)
    done: Mapped[int] = mapped_column(Integer, default=0)
    stats: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    errors: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # Names given more than once (uploads with one file name, JSON documents with one id, records
    # with one id in a file): the last one of each was kept.
    duplicates: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


def create_tables(engine: Engine) -> None:
    create_schema(ApiBase.metadata, engine)
    add_missing_columns(ApiBase.metadata, engine)
