"""Document metadata as the filter language can use it: typed values only.

Values are strings (ISO dates are strings and compare as dates), numbers, booleans, or lists of
strings (tags, matched with `$in`/`$contains`). Anything else is refused on the way in, with the
key named, so a filter never meets a value it cannot compare.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from indexes.errors import InvalidInput

# Where ingestion keeps the label a document's source is shown as (ingest/sources.py): the
# built-in filter field `source` matches the stored source or this label.
LABEL_KEY = "source_label"
MAX_KEYS = 100
MAX_KEY = 64
MAX_VALUE = 10_000
MAX_TAGS = 1000


def check_metadata(metadata: Any, *, allow_none: bool = False) -> dict[str, Any]:
    """A copy of `metadata` with every value checked; `allow_none` lets None mean 'remove'."""
    if not isinstance(metadata, Mapping):
        raise InvalidInput(f"metadata is an object of key -> value, not {type(metadata).__name__}")
    if len(metadata) > MAX_KEYS:
        raise InvalidInput(f"metadata has {len(metadata)} keys; the limit is {MAX_KEYS}")
    checked: dict[str, Any] = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not key or len(key) > MAX_KEY:
            raise InvalidInput(f"metadata key {key!r}: keys are strings of 1-{MAX_KEY} characters")
        checked[key] = check_value(key, value, allow_none)
    return checked


def check_value(key: str, value: Any, allow_none: bool = False) -> Any:
    if value is None and allow_none:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidInput(f"metadata {key}: {value} is not a finite number")
        return value
    if isinstance(value, str):
        if len(value) > MAX_VALUE:
            raise InvalidInput(f"metadata {key}: strings are at most {MAX_VALUE:,} characters")
        return value
    if isinstance(value, (list, tuple)):
        if len(value) > MAX_TAGS or not all(isinstance(v, str) for v in value):
            raise InvalidInput(f"metadata {key}: a list holds at most {MAX_TAGS} strings (tags)")
        return list(value)
    raise InvalidInput(
        f"metadata {key}: {type(value).__name__} is not a metadata value; use a string, number, boolean, "
        "ISO date string or list of strings"
    )


def parse_pairs(items: list[str]) -> dict[str, Any]:
    """`key=value` pairs (CLI): numbers, booleans and JSON lists of strings are typed, the rest
    are strings (an ISO date stays a string and compares as a date)."""
    import json

    found: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(f"metadata {item!r}: use key=value")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if value is None or isinstance(value, dict):
            value = raw
        found[key.strip()] = check_value(key.strip(), value)
    return found


def write_filter_rows(session: Any, collection_id: int, doc_ids: list[int], metadata: list[dict[str, Any]]) -> None:
    """The narrow filter rows (`DocumentFilterRow`) of newly inserted documents, in the writer's
    transaction: a document is filterable exactly when it is visible."""
    from sqlalchemy import insert

    from indexes.schema import DocumentFilterRow

    if doc_ids:
        session.execute(
            insert(DocumentFilterRow),
            [{"document_id": d, "collection_id": collection_id, "doc_metadata": m or {}} for d, m in zip(doc_ids, metadata)],
        )


def backfill_filter_rows(engine: Any) -> int:
    """Filter rows for documents written before the table existed (one statement; none when
    every document has one). Returns how many were added."""
    from sqlalchemy import exists, insert, select, text

    from indexes.schema import _SCHEMA_LOCK, DocumentFilterRow, DocumentRow

    missing = ~exists().where(DocumentFilterRow.document_id == DocumentRow.id)
    with engine.begin() as connection:
        if connection.execute(select(DocumentRow.id).where(missing).limit(1)).first() is None:
            return 0
        if engine.dialect.name == "postgresql":  # two processes opening one database: one fills
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
        result = connection.execute(
            insert(DocumentFilterRow).from_select(
                [DocumentFilterRow.document_id, DocumentFilterRow.collection_id, DocumentFilterRow.doc_metadata],
                select(DocumentRow.id, DocumentRow.collection_id, DocumentRow.doc_metadata).where(missing),
            )
        )
        return int(result.rowcount or 0)
