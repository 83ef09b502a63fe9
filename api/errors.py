"""One JSON error shape for every failure: `{"error": {"code": ..., "message": ...}}`.

Library errors (`RagError` subclasses) map to status codes here and nowhere else; unknown
exceptions become a 500 whose message reveals nothing of the server.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from indexes.collection import CollectionElsewhere
from indexes.errors import (
    CollectionNotFound,
    DocumentNotFound,
    EncoderMismatch,
    InvalidInput,
    MissingDependency,
    ModelLoadError,
    RagError,
    StoreInconsistent,
)
from indexes.locking import WriterBusy
from indexes.store import CollectionUnusable

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An HTTP failure raised by the API itself (auth, limits, missing jobs)."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


# Most specific first: the first isinstance match wins.
RAG_STATUS: list[tuple[type[RagError], int]] = [
    (CollectionNotFound, 404),
    (DocumentNotFound, 404),
    (InvalidInput, 422),
    (EncoderMismatch, 409),
    (WriterBusy, 409),  # another process holds the collection's writer: try again later
    (CollectionElsewhere, 409),  # its files live in another data home
    (CollectionUnusable, 409),  # its stored config no longer loads: delete it
    (ModelLoadError, 503),
    (StoreInconsistent, 503),
    (MissingDependency, 501),
]

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
    500: "internal_error",
    501: "not_implemented",
    503: "unavailable",
    504: "timeout",
}


def status_for(exc: RagError) -> int:
    for kind, status in RAG_STATUS:
        if isinstance(exc, kind):
            return status
    if exc.code == "load_error":
        return 422
    return 400


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


def error_bytes(code: str, message: str) -> bytes:
    return json.dumps(error_body(code, message)).encode("utf-8")


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(x) for x in err.get("loc", ()) if x != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "the request is not valid"


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path: Starlette names only the first route's."""
    from starlette.routing import Match, Route

    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.methods:
            match, _ = route.matches({**request.scope, "method": next(iter(route.methods))})
            if match == Match.FULL:
                methods |= route.methods
    return sorted(methods)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RagError)
    async def _rag_error(_request: Request, exc: RagError) -> JSONResponse:
        return error_response(status_for(exc), exc.code, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(_allowed_methods(request))
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        if exc.status_code == 400 and message == "There was an error parsing the body":
            message = "the request body could not be parsed: send UTF-8 JSON or well-formed multipart/form-data"
        elif exc.status_code == 404 and message == "Not Found":
            message = "no such endpoint; the API is documented at /docs"
        elif exc.status_code == 405:
            message = "this endpoint does not accept that method"
        return error_response(exc.status_code, code, message, headers or None)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error: %s", exc)
        return error_response(500, "internal_error", "internal error; the server log has the details")
