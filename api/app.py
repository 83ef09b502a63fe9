"""`create_app(settings)`: the FastAPI application, one Runtime per process built at start-up.

Middleware, outermost first: metrics (by route template), body-size limit. Every error leaves as
`{"error": {"code", "message"}}` (api.errors). The web page is one static file served at `/`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from api import errors, openapi
from api.limits import BodyLimitMiddleware
from api.metrics import Metrics, MetricsMiddleware
from api.routes import ask, collections, documents, health, jobs, openai_compat, reports, search
from api.state import ApiState, refuse_open_without_auth
from rag.settings import Settings

STATIC = Path(__file__).parent / "static"
API_VERSION = "1.0.0"


def create_app(settings: Settings) -> FastAPI:
    refuse_open_without_auth(settings)
    holder: dict[str, ApiState] = {}

    def index_sizes() -> list[tuple[str, int, int]]:
        state = holder.get("state")
        return state.index_sizes() if state else []

    metrics = Metrics(index_sizes)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = await run_in_threadpool(ApiState.start, settings, metrics)
        holder["state"] = state
        app.state.api = state
        try:
            yield
        finally:
            await run_in_threadpool(state.close)

    app = FastAPI(
        title="rag",
        version=API_VERSION,
        summary="Retrieval-augmented question answering with checkable citations.",
        description=(
            "Authenticate with `Authorization: Bearer KEY` (`rag keys create`). Errors are always "
            '`{"error": {"code": ..., "message": ...}}`.'
        ),
        lifespan=lifespan,
    )
    errors.install(app)
    openapi.install(app, settings)
    app.add_middleware(BodyLimitMiddleware, max_bytes=int(settings.max_body_mb * 1024 * 1024))
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    for module in (health, search, ask, collections, documents, jobs, openai_compat, reports):
        app.include_router(module.router)

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})

    return app
