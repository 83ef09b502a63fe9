"""The OpenAPI document, completed so that it tells the truth about every operation.

FastAPI documents what the route functions declare. What the shared layers do is added here,
once for all routes: the key check (401, 403, 429), the body-size limit (413), unreadable bodies
(400), our error shape on 422 (FastAPI would document its own `HTTPValidationError`), the limits
this server was started with (query length, k, files and documents per request), the JSON schema
of the upload operation's JSON form, server-sent events as events, and `/metrics` as Prometheus
text.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api.routes import openai_compat
from api.schemas import DocumentsIn
from rag.settings import Settings

_ERROR_REF = {"$ref": "#/components/schemas/ErrorOut"}
_METHODS = ("get", "post", "put", "patch", "delete")

# Status codes every operation of a kind can answer, and why.
_AUTH_ERRORS = {
    "401": "no API key, or one that is not valid",
    "403": "the key lacks the scope or the collection",
    "429": "the key's rate limit is reached (Retry-After says when to retry)",
}
_BODY_ERRORS = {
    "400": "the body could not be parsed (not UTF-8, or broken multipart)",
    "413": "the body, a file or the number of files or documents is over a limit",
    "422": "the request is not valid",
}
_PARAM_ERRORS = {"422": "a path or query parameter is not valid"}


# One server-sent event as clients parse it: `event:` names it, `data:` carries its payload (JSON,
# or `[DONE]` at the end of an OpenAI-style stream).
_SSE_EVENT = {
    "type": "object",
    "properties": {
        "event": {"type": "string"},
        "data": {"type": "string"},
        "id": {"type": "string"},
        "retry": {"type": "integer"},
    },
    "required": ["data"],
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR_REF}}}


def _add_components(document: dict[str, Any]) -> None:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    body = DocumentsIn.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, schema in body.pop("$defs", {}).items():
        schemas.setdefault(name, schema)
    schemas["DocumentsIn"] = body
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)


def _apply_limits(document: dict[str, Any], settings: Settings) -> None:
    """The server's own limits, so a request the schema allows is one the server accepts."""
    schemas = document["components"]["schemas"]
    for model, field in (("SearchRequest", "query"), ("AskRequest", "question")):
        prop = schemas[model]["properties"][field]
        prop["maxLength"] = settings.max_query_chars
        prop["pattern"] = r"\S"  # not only whitespace
    schemas["SearchRequest"]["properties"]["k"]["maximum"] = settings.max_k
    openai_compat.openapi_limits(schemas, settings.max_query_chars)
    schemas["DocumentsIn"]["properties"]["documents"]["maxItems"] = settings.max_json_documents
    schemas["DocumentIn"]["properties"]["text"]["maxLength"] = settings.max_document_chars
    upload = document["paths"]["/v1/collections/{name}/documents"]["post"]["requestBody"]["content"]
    files = upload["multipart/form-data"]["schema"]["properties"]["files"]
    files["minItems"] = 1
    files["maxItems"] = settings.max_upload_files


def _add_links(document: dict[str, Any]) -> None:
    """An upload answers with a job: its `id` is what `GET /v1/jobs/{job_id}` takes."""
    job_op = document["paths"]["/v1/jobs/{job_id}"]["get"]["operationId"]
    accepted = document["paths"]["/v1/collections/{name}/documents"]["post"]["responses"]["202"]
    accepted["links"] = {"GetJob": {"operationId": job_op, "parameters": {"job_id": "$response.body#/id"}}}


def _complete_responses(document: dict[str, Any]) -> None:
    for path, item in document["paths"].items():
        for method in _METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            wanted: dict[str, str] = {}
            if operation.get("security"):
                wanted.update(_AUTH_ERRORS)
            if operation.get("parameters"):
                wanted.update(_PARAM_ERRORS)
            if "requestBody" in operation:
                wanted.update(_BODY_ERRORS)
            for status, description in wanted.items():
                responses.setdefault(status, _error(description))
            if "422" in responses:
                responses["422"] = _error(wanted.get("422", "the request is not valid"))
            for response in responses.values():
                stream = response.get("content", {}).get("text/event-stream")
                if stream is not None:
                    stream["schema"] = _SSE_EVENT
            if path == "/metrics":
                responses["200"] = {
                    "description": "Prometheus text exposition format",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }


def install(app: FastAPI, settings: Settings) -> None:
    """Replace `app.openapi` with one that builds the completed document once."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                openapi_version=app.openapi_version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
            )
            _add_components(document)
            _apply_limits(document, settings)
            _complete_responses(document)
            _add_links(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
