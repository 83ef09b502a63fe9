"""Background ingestion jobs: a thread pool does the work, SQL keeps the record.

A job's row says how far it got (files done of total), what it added, and which files failed and
why; it outlives the process. A job that created its collection and ends with nothing in it (every
file failed) removes it again, unless another job on that collection is queued or running. Jobs cut short by a restart are marked failed at the next start-up
(their uploaded bytes lived in memory only); a job belongs to the data home of the server that
runs it, so only that server's restart fails it. Each job writes through its own `Collection` object:
the collection's writer lock serialises writers, even two jobs of this process, while searches keep
using the shared reader object, which swaps to each new generation only once it is published.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, or_, select, update

from api.keys import Principal
from api.limits import safe_upload_name
from api.metrics import Metrics
from api.tables import JobRow, create_tables
from indexes.errors import CollectionNotFound, RagError
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
        # Held while a job looks whether its collection exists and while a finished job removes the
        # empty collection it created, so no job of this process opens a collection being removed.
        self._claims = threading.Lock()
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

    def open_collection(self, name: str) -> bool:
        """Open `name` for a job the request is about to submit, creating it if it does not exist (so
        a bad name or configuration is the request's 4xx); True when this call created it."""
        with self._claims:
            existed = self._exists(name)
            self.runtime.writable_collection(name)
        return not existed

    def submit_files(
        self, collection: str, files: list[tuple[str, bytes]], principal: Principal, created: bool = False
    ) -> dict[str, Any]:
        """`created`: the request created the collection (`open_collection`), so the job removes it
        again if it ends with the collection empty."""
        job_id = self._create(collection, "files", len(files), principal)
        self.pool.submit(self._guard, job_id, collection, created, self._run_files, files)
        return self.get(job_id) or {}

    def submit_documents(
        self, collection: str, documents: list[Document], principal: Principal, created: bool = False
    ) -> dict[str, Any]:
        job_id = self._create(collection, "documents", len(documents), principal)
        self.pool.submit(self._guard, job_id, collection, created, self._run_documents, documents)
        return self.get(job_id) or {}

    def get(self, job_id: str) -> dict[str, Any] | None:
        with self.sessions() as session:
            row = session.get(JobRow, job_id)
            return None if row is None else _job_dict(row)

    # -- running -------------------------------------------------------------------------------
    def _guard(self, job_id: str, collection: str, created: bool, work: Any, payload: Any) -> None:
        """Run `work(job_id, target, payload)`, which answers the job's final status and values. The
        job always ends in a final state, recorded only after an empty collection the job created
        is removed (a client that sees the job failed no longer sees that collection). The job takes
        its collection under `_claims`, so it never holds a handle of one being removed."""
        try:
            self._start(job_id)
            with self._claims:
                created = created or not self._exists(collection)  # removed since the request: re-created here
                target = writer_collection(self.runtime, collection)
            status, values = work(job_id, target, payload)
        except Exception as exc:
            log.exception("ingestion job %s failed", job_id)
            message = str(exc) if isinstance(exc, RagError) else f"internal error ({type(exc).__name__})"
            status, values = "failed", {"message": message}
        if created:
            self._drop_if_unused(job_id, collection)
        self._finish(job_id, status, **values)

    def _exists(self, collection: str) -> bool:
        try:
            self.runtime.store.collection(collection)
        except CollectionNotFound:
            return False
        except RagError:
            return True  # there, if unusable (the job will fail on it)
        return True

    def _drop_if_unused(self, job_id: str, collection: str) -> None:
        """Remove the collection this job created if it holds no document and no other job on it is
        queued or running (any server's: the job table is shared). The document check runs under the
        collection's writer lock (`only_if_empty`); a writer holding it longer than a few seconds
        means it is in use, and it stays."""
        with self._claims:
            try:
                with self.sessions() as session:
                    others = session.scalar(
                        select(func.count())
                        .select_from(JobRow)
                        .where(JobRow.collection == collection, JobRow.id != job_id, JobRow.status.in_(["queued", "running"]))
                    )
                if not others and self.runtime.store.drop_collection(collection, timeout=5.0, only_if_empty=True):
                    log.info("ingestion job %s: removed the empty collection %r it had created", job_id, collection)
            except CollectionNotFound:
                pass
            except Exception:  # the clean-up is a courtesy: the job's own result still gets recorded
                log.exception("ingestion job %s: could not remove the empty collection %r", job_id, collection)

    def _start(self, job_id: str) -> None:
        self._set(job_id, status="running", started_at=utcnow())

    def _set(self, job_id: str, **values: Any) -> None:
        with self.sessions.begin() as session:
            session.execute(update(JobRow).where(JobRow.id == job_id).values(**values))

    def _finish(self, job_id: str, status: str, **values: Any) -> None:
        self._set(job_id, status=status, finished_at=utcnow(), **values)
        self.metrics.jobs.labels(status).inc()

    def _run_files(self, job_id: str, target: Collection, files: list[tuple[str, bytes]]) -> tuple[str, dict[str, Any]]:
        ingestor = self.runtime.ingestor(target)
        stats: dict[str, int] = dict.fromkeys(_COUNTED, 0)
        errors: list[dict[str, str]] = []
        names = Counter(safe_upload_name(name) for name, _ in files)
        duplicates = [name for name, n in names.items() if n > 1]  # later files replaced earlier ones
        with target.writer():  # one lock and one recovery for the job; each file one small segment
            self._ingest_files(job_id, ingestor, files, stats, errors, duplicates)
        succeeded = len(files) - len({e["source"] for e in errors})
        status = "succeeded" if not errors else ("completed_with_errors" if succeeded else "failed")
        return status, {"stats": stats, "errors": errors, "duplicates": duplicates}

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

    def _run_documents(self, job_id: str, target: Collection, documents: list[Document]) -> tuple[str, dict[str, Any]]:
        ingestor = self.runtime.ingestor(target)
        report = ingestor.ingest_documents(documents)
        found = report.to_dict()
        stats = {key: int(found.get(key, 0)) for key in _COUNTED}
        self.metrics.record_ingest(found)
        errors = [{"source": e.get("source", ""), "error": e.get("error", "")} for e in report.errors]
        self.metrics.file_errors.inc(len(errors))
        ok = len(documents) - len(errors)
        status = "succeeded" if not errors else ("completed_with_errors" if ok else "failed")
        return status, {"done": len(documents), "stats": stats, "errors": errors, "duplicates": _public(report.duplicates)}


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

