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


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _filter_schemas() -> dict[str, dict[str, Any]]:
    """The filter language (indexes/filters.py) as JSON Schema, so that a filter the document
    allows is one the server takes: field names, operators, value types, list sizes, built-in
    fields' types. What JSON Schema cannot say (nesting deeper than MAX_DEPTH, more than
    MAX_CONDITIONS conditions) is in the descriptions."""
    from indexes.filters import _FIELD, MAX_CONDITIONS, MAX_DEPTH, MAX_LIST, MAX_STRING

    bare = _FIELD.pattern
    string = {"type": "string", "maxLength": MAX_STRING}
    number = {"type": "number"}
    # Ranges on a string compare ISO dates; the server parses them with datetime.fromisoformat.
    date = {"anyOf": [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}]}
    doc_id = {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1}
    scalar = {"anyOf": [string, number, {"type": "boolean"}]}

    def operators(name: str, value: dict[str, Any], ranges: dict[str, Any] | None, *, exists: bool, prefix: bool, contains: bool) -> dict[str, Any]:
        props: dict[str, Any] = {"$eq": value, "$ne": value}
        props["$in"] = props["$nin"] = {"type": "array", "maxItems": MAX_LIST, "items": value}
        if ranges is not None:
            props.update({op: ranges for op in ("$gt", "$gte", "$lt", "$lte")})
        if exists:
            props["$exists"] = {"type": "boolean"}
        if prefix:
            props["$prefix"] = string
        if contains:
            props["$contains"] = value
        props["$not"] = _ref(name)
        return {"type": "object", "properties": props, "additionalProperties": False, "minProperties": 1}

    def condition(ops: str, value: dict[str, Any]) -> dict[str, Any]:
        return {"anyOf": [value, _ref(ops)]}

    return {
        "WhereValue": scalar,
        "WhereOperators": operators("WhereOperators", scalar, {"anyOf": [number, date]}, exists=True, prefix=True, contains=True),
        "WhereDocIdOperators": operators("WhereDocIdOperators", doc_id, doc_id, exists=False, prefix=False, contains=False),
        "WhereSourceOperators": operators("WhereSourceOperators", string, None, exists=False, prefix=True, contains=False),
        "WhereExternalIdOperators": operators("WhereExternalIdOperators", string, None, exists=True, prefix=True, contains=False),
        "WhereDateOperators": operators("WhereDateOperators", date, date, exists=False, prefix=False, contains=False),
        "Where": {
            "type": "object",
            "description": "{field: value} or {field: {operator: value}}, combined with $and, $or, $not; a field is a "
            "metadata key (or metadata.KEY for one named like a built-in) or a built-in: source, doc_id, external_id, "
            f"ingested_at. At most {MAX_DEPTH} levels deep and {MAX_CONDITIONS} conditions (422 beyond).",
            "properties": {
                "doc_id": condition("WhereDocIdOperators", doc_id),
                "source": condition("WhereSourceOperators", string),
                "external_id": condition("WhereExternalIdOperators", string),
                "ingested_at": condition("WhereDateOperators", date),
            },
            "patternProperties": {
                r"^\$(and|or)$": {"type": "array", "minItems": 1, "items": {"allOf": [_ref("Where")], "minProperties": 1}},
                r"^\$not$": {"allOf": [_ref("Where")], "minProperties": 1},
                "^(metadata\\.)?" + bare[1:]: condition("WhereOperators", scalar),
            },
            "additionalProperties": False,
            # a Haystack-style filter is refused with a message saying which shape we take
            "not": {"anyOf": [{"required": ["operator", "conditions"]}, {"required": ["operator", "field"]}]},
            "examples": [{"year": {"$gte": 2020}, "tenant": "acme"}],
        },
        "MetadataEquals": {
            "type": "object",
            "description": "exact matches on document metadata keys",
            "propertyNames": {"pattern": bare},
            "additionalProperties": scalar,
        },
    }


def _describe_filters(document: dict[str, Any]) -> None:
    """Filters in bodies and the `where` query parameter (JSON in a query string) as the language."""
    schemas = document["components"]["schemas"]
    schemas.update(_filter_schemas())
    props = schemas["Filters"]["properties"]
    props["where"] = {"anyOf": [_ref("Where"), {"type": "null"}], "description": props["where"].get("description", "")}
    props["metadata"] = {"anyOf": [_ref("MetadataEquals"), {"type": "null"}], "description": "exact matches on document metadata"}
    # A JSON document's strings cannot hold NUL (PostgreSQL text cannot store it; refused with 422
    # before anything is stored), metadata included at any depth.
    no_nul = r"^[^\x00]*$"
    schemas["JsonValue"] = {
        "anyOf": [
            {"type": "string", "pattern": no_nul},
            {"type": ["number", "boolean", "null"]},
            {"type": "array", "items": _ref("JsonValue")},
            {"type": "object", "propertyNames": {"pattern": no_nul}, "additionalProperties": _ref("JsonValue")},
        ]
    }
    document_in = schemas["DocumentIn"]["properties"]
    document_in["metadata"] = {
        "type": "object",
        "propertyNames": {"pattern": no_nul},
        "additionalProperties": _ref("JsonValue"),
        "description": "string, number, boolean, ISO date string or list of strings per key (checked when the job runs)",
    }
    for field in ("text", "title"):
        document_in[field]["pattern"] = no_nul
    for branch in document_in["id"].get("anyOf", []):
        if branch.get("type") == "string":
            branch["pattern"] = no_nul
    listing = document["paths"]["/v1/collections/{name}/documents"]["get"]
    # uvicorn answers 400, in plain text, to a request line it cannot parse (a query string with
    # raw control characters), before the application sees it
    listing["responses"]["400"] = {
        "description": "the request line could not be parsed",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
    for param in listing.get("parameters", []):
        if param["name"] == "where":
            param.pop("schema", None)
            param["content"] = {"application/json": {"schema": {"anyOf": [_ref("Where"), {"type": "null"}]}}}


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
            _describe_filters(document)
            _complete_responses(document)
            _add_links(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
