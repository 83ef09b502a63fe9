"""Adding (as background jobs), listing and deleting documents of a collection."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from api.auth import check_collection, require
from api.errors import ApiError
from api.jobs import api_document, writer_collection
from api.keys import Principal
from api.schemas import DeleteResponse, DocumentList, DocumentsIn, ErrorOut, JobOut, MetadataIn, MetadataOut
from api.state import ApiState, api_state
from indexes.errors import DocumentNotFound
from indexes.filters import Where
from indexes.store import Collection
from ingest.loaders import mib, size_problem, unstorable_problem
from ingest.sources import public_source

router = APIRouter(prefix="/v1/collections/{name}/documents", tags=["documents"])
NamePath = Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="collection name")

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "files (.txt .md .html .pdf .docx .jsonl .json .json.gz); parsed from their bytes",
                        }
                    },
                    "required": ["files"],
                }
            },
            "application/json": {"schema": {"$ref": "#/components/schemas/DocumentsIn"}},
        },
    }
}


async def _read_upload(state: ApiState, upload: UploadFile) -> bytes:
    limit = state.settings.max_file_bytes
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise ApiError(
            413,
            "payload_too_large",
            f"{upload.filename}: over the {mib(limit)} MiB per-file limit (RAG_MAX_FILE_MB)",
        )
    return data


@router.post(
    "",
    status_code=202,
    response_model=JobOut,
    summary="Add files (multipart field `files`) or JSON documents; returns a job",
    openapi_extra=_UPLOAD_BODY,
    responses={413: {"model": ErrorOut}, 415: {"model": ErrorOut}, 422: {"model": ErrorOut}, 403: {"model": ErrorOut}},
)
async def add_documents(
    request: Request, name: str = NamePath, principal: Principal = Depends(require("write"))
) -> JSONResponse:
    state = api_state(request)
    check_collection(principal, name)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        limit = state.settings.max_upload_files
        form = await request.form(max_files=limit + 1, max_fields=limit + 10)
        try:
            fields = form.getlist("files")
            uploads = [u for u in fields if isinstance(u, UploadFile)]
            if len(uploads) != len(fields):
                raise ApiError(422, "invalid_request", "the field 'files' must hold files, not text values")
            if not uploads:
                raise ApiError(422, "invalid_request", "no files: send them in the multipart field 'files'")
            if len(uploads) > limit:
                raise ApiError(413, "too_many_files", f"{len(uploads)} files; the limit is {limit} per request (RAG_MAX_UPLOAD_FILES)")
            files = [(u.filename or "upload", await _read_upload(state, u)) for u in uploads]
        finally:
            await form.close()
        created = await run_in_threadpool(state.jobs.open_collection, name)
        job = state.jobs.submit_files(name, files, principal, created)
    elif content_type == "application/json":
        try:
            payload = DocumentsIn.model_validate_json(await request.body())
        except ValidationError as exc:
            first: dict[str, Any] = dict(exc.errors()[0]) if exc.errors() else {}
            where = ".".join(str(x) for x in first.get("loc", ())) or "body"
            raise ApiError(422, "invalid_request", f"{where}: {first.get('msg', 'invalid JSON documents')}") from None
        if len(payload.documents) > state.settings.max_json_documents:
            raise ApiError(
                413, "too_many_documents", f"{len(payload.documents)} documents; the limit is {state.settings.max_json_documents} (RAG_MAX_JSON_DOCUMENTS)"
            )
        documents = [api_document(item) for item in payload.documents]
        limits = state.settings.input_limits
        for number, document in enumerate(documents):
            bad = unstorable_problem(document)
            if bad:
                raise ApiError(422, "invalid_document", f"documents[{number}]: {bad}")
            too_big = size_problem(document, limits)
            if too_big:
                raise ApiError(413, "payload_too_large", f"documents[{number}]: {too_big}")
        created = await run_in_threadpool(state.jobs.open_collection, name)
        job = state.jobs.submit_documents(name, documents, principal, created)
    else:
        raise ApiError(415, "unsupported_media_type", "send multipart/form-data (field 'files') or application/json ({'documents': [...]})")
    return JSONResponse(job, status_code=202, headers={"Location": f"/v1/jobs/{job['id']}"})


@router.get(
    "",
    response_model=DocumentList,
    summary="Documents of a collection, by id",
    responses={404: {"model": ErrorOut}, 403: {"model": ErrorOut}},
)
def list_documents(
    request: Request,
    name: str = NamePath,
    offset: int = Query(0, ge=0, le=10_000_000),
    limit: int = Query(100, ge=1, le=1000),
    where: str | None = Query(None, max_length=20_000, description='a filter as JSON, e.g. {"year": {"$gte": 2020}} (the language of /v1/search)'),
    principal: Principal = Depends(require("read")),
) -> dict[str, Any]:
    from api.filtering import scoped
    from indexes.filters import parse_where

    check_collection(principal, name)
    target = api_state(request).runtime.collection(name)
    chosen = scoped(principal, parse_where(where) if where else None)
    listed = target.documents(offset, limit, where=chosen)
    documents = [{**doc, "source": public_source(doc["source"], doc.get("metadata") or {})} for doc in listed]
    return {"collection": name, "offset": offset, "limit": limit, "documents": documents}


@router.delete(
    "/{doc_id}",
    response_model=DeleteResponse,
    summary="Delete a document from SQL and FAISS together",
    responses={404: {"model": ErrorOut}, 403: {"model": ErrorOut}, 503: {"model": ErrorOut}},
)
async def delete_document(
    request: Request,
    name: str = NamePath,
    doc_id: int = Path(ge=1, le=2**62),
    principal: Principal = Depends(require("write")),
) -> dict[str, Any]:
    """Waits for the writer lock in the bounded write queue (503 when it is full), never on the
    threads that serve reads."""
    check_collection(principal, name)
    state = api_state(request)
    await run_in_threadpool(state.runtime.collection, name)  # 404 for an unknown collection, without creating it
    from api.filtering import scoped

    scope = scoped(principal, None)
    found, result = await state.writes.run(_delete, state, name, doc_id, scope)
    state.metrics.documents.labels("deleted").inc(result["deleted"])
    return {"collection": name, "deleted": result["deleted"], "document_ids": found}


def _delete(state: ApiState, name: str, doc_id: int, scope: Where | None) -> tuple[list[int], dict[str, Any]]:
    from indexes.filters import parse_where

    target: Collection = writer_collection(state.runtime, name)
    with target.writer():
        try:
            found = target.find_documents(doc_id, by="id")
        except DocumentNotFound:
            found = []
        if found and scope and not target.documents(0, 1, where=scope.and_(parse_where({"doc_id": doc_id}))):
            found = []  # another tenant's document: as absent as a missing one
        if not found:
            raise DocumentNotFound(f"no document {doc_id} in collection {name!r}")
        return found, target.delete(found)


@router.patch(
    "/{doc_id}",
    response_model=MetadataOut,
    summary="Change a document's metadata without re-embedding it; the next search's filters see it",
    responses={404: {"model": ErrorOut}, 403: {"model": ErrorOut}, 422: {"model": ErrorOut}, 503: {"model": ErrorOut}},
)
async def patch_document(
    body: MetadataIn,
    request: Request,
    name: str = NamePath,
    doc_id: int = Path(ge=1, le=2**62),
    principal: Principal = Depends(require("write")),
) -> dict[str, Any]:
    """Waits for the writer lock in the bounded write queue, as a delete does."""
    from api.filtering import scoped

    check_collection(principal, name)
    state = api_state(request)
    await run_in_threadpool(state.runtime.collection, name)  # 404 for an unknown collection, without creating it
    scope = scoped(principal, None)
    metadata = await state.writes.run(_set_metadata, state, name, doc_id, body.metadata, body.merge, scope)
    return {"collection": name, "document_id": doc_id, "metadata": metadata}


def _set_metadata(state: ApiState, name: str, doc_id: int, metadata: dict[str, Any], merge: bool, scope: Where | None) -> dict[str, Any]:
    target: Collection = writer_collection(state.runtime, name)
    return target.set_metadata(doc_id, metadata, merge=merge, where=scope)
