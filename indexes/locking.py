"""One writer per collection, wherever the writers run.

PostgreSQL: a session-level advisory lock keyed by the collection id, held on a dedicated
connection, so two processes on two machines (or two data homes on one database) never write
the same collection at once; the server releases it when the connection dies. SQLite: a file lock
beside the database file (every writer of a SQLite database reaches that folder), released by
the OS when the process dies.
"""

from __future__ import annotations

import time
import zlib
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from sqlalchemy import text
from sqlalchemy.engine import Engine

from indexes.errors import RagError

_NAMESPACE = zlib.crc32(b"rag collection writer") & 0x7FFFFFFF


class WriterBusy(RagError):
    code = "collection_busy"


class WriterLock:
    """Exclusive write access to one collection; `acquire(timeout)` then `release()`."""

    def __init__(self, engine: Engine, collection_id: int, name: str) -> None:
        self.engine = engine
        self.collection_id = collection_id
        self.name = name
        self._connection: Any = None
        self._file: FileLock | None = None
        if engine.dialect.name != "postgresql":
            database = engine.url.database
            folder = Path(database).parent if database and database != ":memory:" else Path.cwd()
            stem = Path(database).name if database else "memory"
            self._file = FileLock(str(folder / f".{stem}.collection-{collection_id}.lock"))

    def acquire(self, timeout: float) -> None:
        busy = WriterBusy(f"collection {self.name!r} is being written by another process; try again later")
        if self._file is not None:
            try:
                self._file.acquire(timeout=timeout)
            except Timeout:
                raise busy from None
            return
        connection = self.engine.connect()
        deadline = time.monotonic() + timeout
        while True:
            got = connection.execute(
                text("SELECT pg_try_advisory_lock(:ns, :id)"), {"ns": _NAMESPACE, "id": self.collection_id}
            ).scalar()
            connection.commit()
            if got:
                self._connection = connection
                return
            if time.monotonic() >= deadline:
                connection.close()
                raise busy
            time.sleep(0.05)

    def release(self) -> None:
        if self._file is not None:
            self._file.release()
            return
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.execute(text("SELECT pg_advisory_unlock(:ns, :id)"), {"ns": _NAMESPACE, "id": self.collection_id})
                connection.commit()
            finally:
                connection.close()
