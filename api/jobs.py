"""Background ingestion jobs: a thread pool does the work, SQL keeps the record.

A job's row says how far it got (files done of total), what it added, and which files failed and
why; it outlives the process. Jobs cut short by a restart are marked failed at the next start-up
(their uploaded bytes lived in memory only); a job belongs to the data home of the server that
runs it, so only that server's restart fails it. Each job writes through its own `Collection` object:
the collection's writer lock serialises writers, even two jobs of this process, while searches keep
using the shared reader object, which swaps to each new generation only once it is published.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from sqlalchemy import or_, update

from api.keys import Principal
from api.limits import safe_upload_name
from api.metrics import Metrics
from api.tables import JobRow, create_tables
from indexes.errors import RagError
from indexes.schema import utcnow
from indexes.store import Collection
from indexes.types import Document

if TYPE_CHECKING:
    from rag.runtime import Runtime

log = logging.getLogger(__name__)

UPLOAD_PREFIX = "upload/"
API_PREFIX = "api/"
_COUNTED = ("documents_added", "documents_replaced", "documents_unchanged", "documents_deleted", "chunks_added")


def writer_collection(runtime: Runtime, name: str) -> Collection:
    """A private `Collection` for one write, so its writer state is never shared with a reader."""
    shared = runtime.writable_collection(name)
    return Collection(shared.store, shared.id, shared.name, shared.config)


def api_document(item: Any) -> Document:
    """A JSON document from the API: identified by its id (or a hash of its text) under `api/`."""
    ident = item.id or hashlib.sha256(item.text.encode("utf-8")).hexdigest()[:16]
    return Document(
        source=API_PREFIX + ident, text=item.text, title=item.title, metadata=dict(item.metadata), external_id=ident
    )


class JobManager:
    def __init__(self, runtime: Runtime, metrics: Metrics, workers: int) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self.sessions = runtime.store.sessions
        self.owner = runtime.store.home_id
        create_tables(runtime.store.engine)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rag-ingest")
        self._fail_interrupted()

    def _fail_interrupted(self) -> None:
        """This server's jobs that its previous process left unfinished (their bytes were in its
        memory); jobs of other servers on the same database keep running."""
        with self.sessions.begin() as session:
            session.execute(
                update(JobRow)
                .where(JobRow.status.in_(["queued", "running"]), or_(JobRow.owner == self.owner, JobRow.owner.is_(None)))
                .values(status="failed", message="the server stopped before the job finished; upload again", finished_at=utcnow())
            )

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    # -- submitting ----------------------------------------------------------------------------
    def _create(self, collection: str, kind: str, total: int, principal: Principal) -> str:
        job_id = uuid.uuid4().hex
        with self.sessions.begin() as session:
            session.add(JobRow(id=job_id, collection=collection, kind=kind, total=total, key_id=principal.key_id, owner=self.owner))
        return job_id

    def submit_files(self, collection: str, files: list[tuple[str, bytes]], principal: Principal) -> dict[str, Any]:
        job_id = self._create(collection, "files", len(files), principal)
        self.pool.submit(self._guard, job_id, self._run_files, job_id, collection, files)
        return self.get(job_id) or {}

    def submit_documents(self, collection: str, documents: list[Document], principal: Principal) -> dict[str, Any]:
        job_id = self._create(collection, "documents", len(documents), principal)
        self.pool.submit(self._guard, job_id, self._run_documents, job_id, collection, documents)
        return self.get(job_id) or {}

    def get(self, job_id: str) -> dict[str, Any] | None:
        with self.sessions() as session:
            row = session.get(JobRow, job_id)
            return None if row is None else _job_dict(row)

    # -- running -------------------------------------------------------------------------------
    def _guard(self, job_id: str, work: Any, *args: Any) -> None:
        try:
            work(*args)
        except Exception as exc:  # a job must always end in a final state
            log.exception("ingestion job %s failed", job_id)
            message = str(exc) if isinstance(exc, RagError) else f"internal error ({type(exc).__name__})"
            self._finish(job_id, "failed", message=message)

    def _start(self, job_id: str) -> None:
        self._set(job_id, status="running", started_at=utcnow())

    def _set(self, job_id: str, **values: Any) -> None:
        with self.sessions.begin() as session:
            session.execute(update(JobRow).where(JobRow.id == job_id).values(**values))

    def _finish(self, job_id: str, status: str, **values: Any) -> None:
        self._set(job_id, status=status, finished_at=utcnow(), **values)
        self.metrics.jobs.labels(status).inc()

    def _run_files(self, job_id: str, collection: str, files: list[tuple[str, bytes]]) -> None:
        self._start(job_id)
        target = writer_collection(self.runtime, collection)
        ingestor = self.runtime.ingestor(target)
        stats: dict[str, int] = dict.fromkeys(_COUNTED, 0)
        errors: list[dict[str, str]] = []
        names = Counter(safe_upload_name(name) for name, _ in files)
        duplicates = [name for name, n in names.items() if n > 1]  # later files replaced earlier ones
        with target.writer():  # one lock and one recovery for the job; each file one small segment
            self._ingest_files(job_id, ingestor, files, stats, errors, duplicates)
        succeeded = len(files) - len({e["source"] for e in errors})
        status = "succeeded" if not errors else ("completed_with_errors" if succeeded else "failed")
        self._finish(job_id, status, stats=stats, errors=errors, duplicates=duplicates)

    def _ingest_files(
        self,
        job_id: str,
        ingestor: Any,
        files: list[tuple[str, bytes]],
        stats: dict[str, int],
        errors: list[dict[str, str]],
        duplicates: list[str],
    ) -> None:
        for done, (raw_name, data) in enumerate(files, start=1):
            name = safe_upload_name(raw_name)
            try:
                report = ingestor.ingest_upload(name, data, UPLOAD_PREFIX + name)
            except RagError as exc:
                errors.append({"source": raw_name, "error": str(exc)})
                self.metrics.file_errors.inc()
            else:
                found = report.to_dict()
                duplicates.extend(d for d in _public(report.duplicates) if d not in duplicates)
                for key in _COUNTED:
                    stats[key] += int(found.get(key, 0))
                self.metrics.record_ingest(found)
                for error in report.errors:
                    errors.append({"source": raw_name, "error": error.get("error", "")})
                    self.metrics.file_errors.inc()
            self._set(job_id, done=done, stats=dict(stats), errors=list(errors))

    def _run_documents(self, job_id: str, collection: str, documents: list[Document]) -> None:
        self._start(job_id)
        ingestor = self.runtime.ingestor(writer_collection(self.runtime, collection))
        report = ingestor.ingest_documents(documents)
        found = report.to_dict()
        stats = {key: int(found.get(key, 0)) for key in _COUNTED}
        self.metrics.record_ingest(found)
        errors = [{"source": e.get("source", ""), "error": e.get("error", "")} for e in report.errors]
        self.metrics.file_errors.inc(len(errors))
        ok = len(documents) - len(errors)
        status = "succeeded" if not errors else ("completed_with_errors" if ok else "failed")
        self._finish(job_id, status, done=len(documents), stats=stats, errors=errors, duplicates=_public(report.duplicates))


def _public(sources: list[str]) -> list[str]:
    """Duplicates as the API user named them: a file name or document id, not our source prefix."""
    return [s[len(UPLOAD_PREFIX) :] if s.startswith(UPLOAD_PREFIX) else s.removeprefix(API_PREFIX) for s in sources]


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _job_dict(row: JobRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "collection": row.collection,
        "kind": row.kind,
        "status": row.status,
        "total": row.total,
        "done": row.done,
        "stats": row.stats or {},
        "errors": row.errors or [],
        "duplicates": row.duplicates or [],
        "message": row.message or "",
        "created_at": _iso(row.created_at),
        "started_at": _iso(row.started_at),
        "finished_at": _iso(row.finished_at),
    }

