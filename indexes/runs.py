"""Ingestion runs: what each `rag ingest` (or API job) saw, did and failed on, kept in SQL.

A run is started by a process that holds the collection's writer lock; a run still `running`
when the next writer takes the lock belonged to a process that died, and that writer marks it
`interrupted` (`CollectionWriter.recover`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import sessionmaker

from indexes.schema import RunRow, utcnow


def start_run(sessions: sessionmaker[Any], collection_id: int) -> int:
    with sessions.begin() as session:
        run = RunRow(collection_id=collection_id)
        session.add(run)
        session.flush()
        return int(run.id)


def finish_run(
    sessions: sessionmaker[Any], run_id: int, status: str, stats: dict[str, Any], errors: list[dict[str, str]]
) -> None:
    with sessions.begin() as session:
        session.execute(
            update(RunRow).where(RunRow.id == run_id).values(status=status, stats=stats, errors=errors, finished_at=utcnow())
        )
