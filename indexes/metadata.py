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


def typed_pair(item: str, *, lists: bool) -> tuple[str, Any] | None:
    """`key=value` as the CLI types it: JSON numbers and booleans (and lists of strings, where
    `lists`) are typed, everything else stays the string typed; None when it is not key=value."""
    import json

    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        return None
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    if value is None or isinstance(value, dict) or (isinstance(value, list) and not lists):
        value = raw
    return key.strip(), value


def parse_pairs(items: list[str]) -> dict[str, Any]:
    """`key=value` pairs (CLI): numbers, booleans and JSON lists of strings are typed, the rest
    are strings (an ISO date stays a string and compares as a date)."""
    found: dict[str, Any] = {}
    for item in items:
        pair = typed_pair(item, lists=True)
        if pair is None:
            raise InvalidInput(f"metadata {item!r}: use key=value")
        found[pair[0]] = check_value(*pair)
    return found


MAX_INDEXED = 500  # longer strings are kept but not filterable (a PostgreSQL btree entry is at most ~2.7 kB)


def field_rows(document_id: int, metadata: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The `DocumentFieldRow`s of one document's metadata: filterable values only (keys a filter
    can name; numbers, booleans, strings up to MAX_INDEXED characters, lists of those)."""
    import re

    rows: list[dict[str, Any]] = []
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$", key):
            continue
        for item in value if isinstance(value, list) else [value]:
            row = {"document_id": document_id, "key": key, "number": None, "string": None}
            if isinstance(item, bool):
                row.update(kind="b", number=float(item))
            elif isinstance(item, (int, float)) and math.isfinite(item):
                row.update(kind="n", number=float(item))
            elif isinstance(item, str) and len(item) <= MAX_INDEXED:
                row.update(kind="s", string=item)
            else:
                continue
            rows.append(row)
    return rows


def write_filter_rows(session: Any, collection_id: int, doc_ids: list[int], metadata: list[dict[str, Any]]) -> None:
    """The field rows of newly inserted documents, in the writer's transaction: a document is
    filterable exactly when it is visible. (`collection_id` is implied by the document.)"""
    from sqlalchemy import insert

    from indexes.schema import DocumentFieldRow

    rows = [row for d, m in zip(doc_ids, metadata) for row in field_rows(d, m)]
    for start in range(0, len(rows), 2000):
        session.execute(insert(DocumentFieldRow), rows[start : start + 2000])


def replace_filter_rows(session: Any, document_id: int, metadata: Mapping[str, Any]) -> None:
    from sqlalchemy import delete, insert

    from indexes.schema import DocumentFieldRow

    session.execute(delete(DocumentFieldRow).where(DocumentFieldRow.document_id == document_id))
    # A document left with nothing filterable gets a marker row no filter names, so every document
    # has rows (what the filter caches are valid for is the collection's metadata_version).
    rows = field_rows(document_id, metadata) or [{"document_id": document_id, "key": "", "kind": "-", "number": None, "string": None}]
    session.execute(insert(DocumentFieldRow), rows)


def backfill_filter_rows(engine: Any) -> int:
    """Field rows for the documents of a database made before the table existed (called when
    `Store` has just created it; skipped when it already holds rows). Returns rows added."""
    from sqlalchemy import select, text

    from indexes.schema import _SCHEMA_LOCK, DocumentFieldRow, DocumentRow

    added = 0
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":  # two processes opening one database: one fills
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
        if connection.execute(select(DocumentFieldRow.id).limit(1)).first() is not None:
            return 0
        from sqlalchemy.orm import Session

        session = Session(bind=connection)
        for doc_id, metadata in connection.execute(select(DocumentRow.id, DocumentRow.doc_metadata)):
            rows = field_rows(doc_id, metadata)
            if rows:
                write_filter_rows(session, 0, [doc_id], [metadata])
                added += len(rows)
        session.flush()
    return added
