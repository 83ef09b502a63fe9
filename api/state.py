"""What one API process shares: the Runtime (store, models), keys, jobs, limiter and metrics."""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import Request

from api.auth import RateLimiter, check_collection
from api.batching import SEARCH_BATCH_WORKERS, search_batcher
from api.jobs import JobManager
from api.keys import KeyStore, Principal
from api.metrics import Metrics
from api.writes import WriteQueue
from indexes.errors import RagError
from rag.runtime import Runtime
from rag.settings import Settings

if TYPE_CHECKING:
    from api.batching import MicroBatcher
    from rag.qa import AskPipeline

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def refuse_open_without_auth(settings: Settings) -> None:
    if not settings.auth and not is_loopback(settings.api_host):
        raise RagError(
            f"--no-auth is for local development and only binds to loopback (127.0.0.1, ::1, localhost), "
            f"not {settings.api_host!r}; create a key with `rag keys create` instead"
        )


@dataclass
class ApiState:
    settings: Settings
    runtime: Runtime
    keys: KeyStore
    jobs: JobManager
    limiter: RateLimiter
    metrics: Metrics
    pipeline: AskPipeline  # shared: its reader and generator load once
    models: dict[str, Any] = field(default_factory=dict)
    search_batcher: MicroBatcher | None = None  # None when RAG_SEARCH_BATCH_MAX=0 (default 32)
    writes: WriteQueue = field(default_factory=WriteQueue)  # synchronous writes, off the request threads

    @classmethod
    def start(cls, settings: Settings, metrics: Metrics) -> ApiState:
        """Open the store and load every model once, before the first request."""
        runtime = Runtime(settings)
        if settings.search_batch_max:
            settings = serving_settings(settings, runtime.device)
            runtime = Runtime(settings)
        store = runtime.store
        models: dict[str, Any] = {}
        spec = runtime.requested_spec()
        models["embedder"] = runtime.encoder(spec).spec.model
        for name in store.collection_names():
            try:
                models[f"embedder:{name}"] = runtime.encoder_for(store.collection(name)).spec.model
            except RagError as exc:
                log.warning("collection %s: %s", name, exc)
        pipeline = runtime.ask_pipeline()
        try:
            pipeline.reader  # noqa: B018 - the property loads the extractive reader now, not on the first question
            models["reader"] = True
        except RagError as exc:
            models["reader"] = f"not loaded: {exc}"
            log.warning("extractive reader not loaded: %s", exc)
        return cls(
            settings=settings,
            runtime=runtime,
            keys=KeyStore(store),
            jobs=JobManager(runtime, metrics, settings.job_workers),
            limiter=RateLimiter(settings.rate_limit_per_minute),
            metrics=metrics,
            models=models,
            pipeline=pipeline,
            search_batcher=(
                search_batcher(runtime, settings.search_batch_max, settings.search_batch_wait_ms)
                if settings.search_batch_max
                else None
            ),
        )

    def close(self) -> None:
        if self.search_batcher is not None:
            self.search_batcher.close()
        self.writes.close()
        self.jobs.shutdown()
        self.runtime.store.close()

    def collection_for(self, principal: Principal, requested: str | None) -> str:
        """The collection a request means: the one named, else the key's own, else the default."""
        name = requested or principal.collection or self.settings.collection
        check_collection(principal, name)
        return name

    def index_sizes(self) -> list[tuple[str, int, int]]:
        sizes = []
        store = self.runtime.store
        for name in store.collection_names():
            try:
                info = store.collection(name).stats()
                sizes.append((name, int(info["vectors"]), int(info["index_bytes"])))
            except (RagError, OSError):
                continue
        return sizes


def api_state(request: Request) -> ApiState:
    return request.app.state.api


def serving_settings(settings: Settings, device: str) -> Settings:
    """`settings` with the query encoder a batching server runs best with on this CPU
    (`indexes.encoder.serving_runtime`): unchanged unless RAG_ENCODER_RUNTIME is `auto` and no
    thread count was set."""
    from indexes.encoder import serving_runtime

    choice, per_call = serving_runtime(settings.encoder_runtime, device, settings.quantize, settings.encoder_call_threads, SEARCH_BATCH_WORKERS)
    if per_call is None:
        return settings
    log.info("query encoder: %s", choice.reason)
    return settings.model_copy(update={"encoder_runtime": choice.runtime, "encoder_threads": per_call})
