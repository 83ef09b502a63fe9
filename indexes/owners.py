"""Which document each chunk of a collection belongs to, in memory (filters resolve to documents,
searches run over chunks: indexes/matching.py)."""

from __future__ import annotations

import threading
from itertools import chain
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine


class ChunkOwners:
    """chunk id -> document id for one collection's chunks, in memory, read from SQL once per
    chunk: a new snapshot reads only the chunks added since (a collection's writers take turns,
    so its chunk ids grow; should one be missing below the largest known, the read starts there)."""

    def __init__(self, engine: Engine, collection_id: int) -> None:
        self._engine = engine
        self._collection_id = collection_id
        self._ids = np.zeros(0, np.int64)  # sorted
        self._documents = np.zeros(0, np.int64)
        self._absent = np.zeros(0, np.int64)  # asked for and not in SQL (rows purged): not read again
        self._lock = threading.Lock()

    def documents_of(self, ids: np.ndarray) -> np.ndarray:
        """Document id of each of the sorted chunk ids `ids`; -1 where SQL has no such chunk."""
        with self._lock:
            found = self._lookup(ids)
            missing = ids[found < 0]
            if len(self._absent):
                missing = missing[~np.isin(missing, self._absent)]
            if len(missing):
                self._read(missing)
                found = self._lookup(ids)
                self._absent = np.union1d(self._absent, missing[self._lookup(missing) < 0])
            return found

    def _lookup(self, ids: np.ndarray) -> np.ndarray:
        found = np.full(len(ids), -1, np.int64)
        if not len(self._ids) or not len(ids):
            return found
        at = np.minimum(np.searchsorted(self._ids, ids), len(self._ids) - 1)
        held = self._ids[at] == ids
        found[held] = self._documents[at[held]]
        return found

    def _read(self, missing: np.ndarray) -> None:
        """The collection's chunks from the first missing id on (usually: those added since the
        last read; after a late commit, again from below the largest known, which is rare)."""
        from sqlalchemy import select

        from indexes.schema import ChunkRow

        statement = select(ChunkRow.id, ChunkRow.document_id).where(
            ChunkRow.collection_id == self._collection_id, ChunkRow.id >= int(missing[0])
        )
        with self._engine.connect() as connection:
            read = _int_rows(connection, statement, 2)
        if not len(read):
            return
        ids = np.concatenate([self._ids, read[:, 0]])
        documents = np.concatenate([self._documents, read[:, 1]])
        ids, first = np.unique(ids, return_index=True)
        self._ids, self._documents = ids, documents[first]


def _int_rows(connection: Connection, statement: Any, width: int) -> np.ndarray:
    """The rows of a SELECT of `width` integer columns as an (n, width) array, read from the
    driver's cursor: a SQLAlchemy Row per row cost 3 s for 100,000 rows through np.asarray (0.3 s
    built at all), the driver's tuples 0.1 s."""
    result = connection.execute(statement)
    try:
        rows = result.cursor.fetchall()
    finally:
        result.close()
    return np.fromiter(chain.from_iterable(rows), dtype=np.int64, count=width * len(rows)).reshape(-1, width)
