"""Prometheus metrics: requests and latency by route template, ingestion counters, index sizes.

Each app gets its own registry, so several apps in one process (tests) never collide. Routes are
labelled by their template (`/v1/collections/{name}/documents`), never the raw path, so label
cardinality stays bounded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class _IndexCollector(Collector):
    """Vectors and index bytes per collection, read at scrape time."""

    def __init__(self, sizes: Callable[[], Iterable[tuple[str, int, int]]]) -> None:
        self.sizes = sizes

    def collect(self) -> Iterable[GaugeMetricFamily]:
        vectors = GaugeMetricFamily("rag_index_vectors", "vectors in the collection's FAISS index", labels=["collection"])
        size = GaugeMetricFamily("rag_index_bytes", "bytes of the collection's saved FAISS index", labels=["collection"])
        for name, count, nbytes in self.sizes():
            vectors.add_metric([name], count)
            size.add_metric([name], nbytes)
        yield vectors
        yield size


class Metrics:
    def __init__(self, index_sizes: Callable[[], Iterable[tuple[str, int, int]]]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "rag_http_requests", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "rag_http_request_duration_seconds",
            "time to the end of the response (the last SSE event for streams)",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.jobs = Counter("rag_ingest_jobs", "ingestion jobs finished, by outcome", ["status"], registry=self.registry)
        self.documents = Counter(
            "rag_ingest_documents", "documents processed by ingestion jobs", ["outcome"], registry=self.registry
        )
        self.chunks = Counter("rag_ingest_chunks", "passages embedded and indexed by jobs", registry=self.registry)
        self.file_errors = Counter("rag_ingest_file_errors", "uploaded files or documents rejected", registry=self.registry)
        self.registry.register(_IndexCollector(index_sizes))

    def record_ingest(self, stats: dict[str, Any]) -> None:
        for outcome in ("added", "replaced", "unchanged", "deleted"):
            value = int(stats.get(f"documents_{outcome}", 0) or 0)
            if value:
                self.documents.labels(outcome).inc(value)
        if stats.get("chunks_added"):
            self.chunks.inc(int(stats["chunks_added"]))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI, so streamed responses are timed to their last byte and never buffered."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "?")
            self.metrics.requests.labels(method, template, str(status[0])).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - started)
