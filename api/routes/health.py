"""Liveness, readiness and what the web page needs to know before it has a key."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text

from api.auth import authenticate, optional_principal
from api.errors import ApiError
from api.keys import Principal
from api.schemas import Health, Readiness
from api.state import api_state

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="The process is up")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Ready to serve: models loaded, database reachable (no names or details: no key needed)",
    responses={503: {"model": Readiness}},
)
def readyz(request: Request) -> Any:
    """Only reads: a running ingest never makes the server unready (readers search the last
    published generation), and nothing about collections or models is disclosed."""
    state = api_state(request)
    ready = bool(state.models.get("embedder"))
    try:
        with state.runtime.store.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception:  # any driver error means not ready
        ready = False
    body: dict[str, Any] = {"status": "ready" if ready else "not_ready", "checks": {}}
    if not ready:
        body["error"] = {"code": "not_ready", "message": "not ready"}
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get(
    "/v1/info",
    summary="Server capabilities (no key needed; default_collection only for a key that may read it)",
    tags=["health"],
)
def info(request: Request) -> dict[str, Any]:
    state = api_state(request)
    body: dict[str, Any] = {"auth": state.settings.auth}
    # A collection name is the deployment's data: only a caller that may read it learns it.
    principal = optional_principal(request)
    if principal is not None and principal.sees(state.settings.collection):
        body["default_collection"] = state.settings.collection
    return {
        **body,
        "modes": ["extractive", "generative"],
        "limits": {
            "max_query_chars": state.settings.max_query_chars,
            "max_k": state.settings.max_k,
            "answer_k": state.settings.answer_k,
            "max_upload_files": state.settings.max_upload_files,
            "max_file_mb": state.settings.max_file_mb,
            "max_body_mb": state.settings.max_body_mb,
            "rate_limit_per_minute": state.settings.rate_limit_per_minute,
        },
    }


@router.get("/metrics", summary="Prometheus metrics (an unrestricted key when auth is on)", tags=["health"])
def metrics(request: Request, principal: Principal = Depends(authenticate)) -> Response:
    if principal.collection is not None:
        raise ApiError(403, "forbidden", "metrics name every collection; use a key not limited to one")
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(api_state(request).metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
