"""A filter resolved to the chunk ids of a snapshot that it matches.

Each condition of the filter is one SELECT of document ids that reads index entries only (a
metadata condition: the covering (key, value, kind, document_id) indexes of `document_fields`; a
built-in: the collection's documents), all of them in one statement (one round trip, and one
read snapshot, so a metadata update lands in a filter whole or not at all). The conditions are
then combined in memory over the snapshot's own chunks: which chunks a generation shows is what
its segments hold minus its tombstones (as an unfiltered search sees them), and which document
each belongs to is kept per collection (indexes/owners.py: chunk ids are never reused nor moved). So a
1%-selective filter over 100,000 documents reads ~1,000 index entries, not ~1,000 documents and
chunks rows (docs/filters.md); `matching_statement`, the filter as one SQL statement over chunks
and their visible documents, stays as the reference the tests hold this to.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import reduce
from typing import TYPE_CHECKING, Any

import numpy as np

from indexes.filters import And, Cond, Node, Not, Or, Where, document_ids, positive, to_sql

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from indexes.snapshot import Snapshot

CACHED_FILTERS = 64  # resolved filters kept per snapshot


def matching_chunk_ids(snap: Snapshot, where: Where) -> np.ndarray:
    """Sorted chunk ids of the snapshot's visible documents that match `where`.

    Kept on the snapshot (a repeated filter, such as a tenant's, costs one primary-key lookup):
    a snapshot's documents and chunks never change, and their metadata only through
    `Collection.set_metadata`, which bumps the collection's metadata version in its transaction.
    (The largest `document_fields` id was the version before: on PostgreSQL ids are drawn at insert,
    not at commit, so a change that committed after another collection's write went unseen.)"""
    key = json.dumps(where.to_dict(), sort_keys=True, default=str)
    with snap.engine.connect() as connection:
        cached = snap.filter_cache.get(key)
        if cached is not None and cached[0] == int(connection.scalar(_version(snap.collection_id)) or 0):
            return cached[1]
        ids, documents = snap.live_chunks
        if where.root is None:
            version, found = int(connection.scalar(_version(snap.collection_id)) or 0), ids
        else:
            version, mask = _Resolution(snap, documents).run(connection, where.root)
            found = ids[mask]
    if len(snap.filter_cache) >= CACHED_FILTERS:
        snap.filter_cache.pop(next(iter(snap.filter_cache)), None)
    snap.filter_cache[key] = (version, found)
    return found


def _version(collection_id: int) -> Any:
    """SELECT of the collection's metadata version (0 before any change)."""
    from sqlalchemy import func, select

    from indexes.schema import CollectionRow

    return select(func.coalesce(CollectionRow.metadata_version, 0)).where(CollectionRow.id == collection_id)


class _Resolution:
    """One filter over one snapshot: its conditions' document ids read in one statement, then
    And/Or/Not as boolean masks over the snapshot's chunks (a document without a field is in the
    negation of any condition on it, as Mongo and `to_sql` have it)."""

    def __init__(self, snap: Snapshot, documents: np.ndarray) -> None:
        self.snap = snap
        self.documents = documents  # the document of each visible chunk
        self.top = int(documents.max()) + 1 if len(documents) else 0
        self.conditions: list[tuple[Cond, bool]] = []  # (condition selecting rows, negated), in tree order
        self.matched: Iterator[tuple[np.ndarray, bool]] = iter(())

    def run(self, connection: Connection, root: Node) -> tuple[int, np.ndarray]:
        """(the metadata's version, a mask over the snapshot's chunks) in one statement: a row per
        condition holding its document ids joined by commas (100,000 ids as one string cost 18
        ms on SQLite, as 100,000 rows 50-80 ms) and a row holding the version."""
        from sqlalchemy import Text, cast, func, literal, literal_column, union_all

        self._collect(root)
        dialect = str(self.snap.engine.dialect.name)

        def joined(column: Any) -> Any:
            if dialect == "postgresql":
                return func.string_agg(cast(column, Text), literal(","))
            return func.group_concat(column)

        version = _version(self.snap.collection_id)
        parts: list[Any] = [version.with_only_columns(literal_column("-1"), cast(version.selected_columns[0], Text), maintain_column_froms=True)]
        for n, (c, _) in enumerate(self.conditions):
            statement = document_ids(c, self.snap.collection_id, dialect)
            parts.append(statement.with_only_columns(literal_column(str(n)), joined(statement.selected_columns[0]), maintain_column_froms=True))
        found: dict[int, str | None] = dict(connection.execute(union_all(*parts)).all())
        empty = np.zeros(0, np.int64)
        texts = [found[n] for n in range(len(self.conditions))]
        self.matched = iter(
            [(np.fromstring(text, dtype=np.int64, sep=",") if text else empty, negated) for text, (_, negated) in zip(texts, self.conditions)]
        )
        return int(found.get(-1) or 0), self._mask(root)  # no row: the collection was dropped meanwhile

    def _collect(self, node: Node) -> None:
        if isinstance(node, (And, Or)):
            for part in node.parts:
                self._collect(part)
        elif isinstance(node, Not):
            self._collect(node.part)
        else:
            self.conditions.append(positive(node))

    def _mask(self, node: Node) -> np.ndarray:
        if isinstance(node, And):
            return reduce(np.logical_and, [self._mask(p) for p in node.parts])
        if isinstance(node, Or):
            return reduce(np.logical_or, [self._mask(p) for p in node.parts])
        if isinstance(node, Not):
            return ~self._mask(node.part)
        matched, negated = next(self.matched)  # conditions in the order _collect met them
        bitmap = np.zeros(self.top, dtype=bool)
        bitmap[matched[matched < self.top]] = True
        mask = bitmap[self.documents]
        return ~mask if negated else mask


def matching_statement(snap: Snapshot, where: Where) -> Any:
    """The reference: one SELECT of the chunk ids of the snapshot's visible documents that match
    `where` (chunks joined with their documents, the whole filter compiled by `to_sql`)."""
    from sqlalchemy import select

    from indexes.schema import ChunkRow, DocumentRow, visible_at

    statement = (
        select(ChunkRow.id)
        .join(DocumentRow, ChunkRow.document_id == DocumentRow.id)
        .where(DocumentRow.collection_id == snap.collection_id, visible_at(snap.generation))
    )
    condition = to_sql(where, str(snap.engine.dialect.name))
    return statement if condition is None else statement.where(condition)
