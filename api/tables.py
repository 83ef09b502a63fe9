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

from indexes.schema import create_schema, utcnow


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
    """status: queued, running, succeeded, completed_with_errors, failed."""

    __tablename__ = "api_jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    collection: Mapped[str] = mapped_column(String(200), index=True)
    key_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[str] = mapped_column(String(32), default="queued")
    kind: Mapped[str] = mapped_column(String(16))
    total: Mapped[int] = mapped_column(Integer, default=0)
    done: Mapped[int] = mapped_column(Integer, default=0)
    stats: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    errors: Mapped[list[Any]] = mapped_column(JSON, default=list)
    message: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


def create_tables(engine: Engine) -> None:
    create_schema(ApiBase.metadata, engine)
    _add_missing_columns(engine)


def _add_missing_columns(engine: Engine) -> None:
    """Columns added since a database was made (nullable, so old rows keep their meaning)."""
    from sqlalchemy import inspect, text

    present = {c["name"] for c in inspect(engine).get_columns("api_keys")}
    if "where_filter" not in present:
        with engine.begin() as connection:
            connection.execute(text("ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS where_filter JSON")
                               if engine.dialect.name == "postgresql" else text("ALTER TABLE api_keys ADD COLUMN where_filter JSON"))
