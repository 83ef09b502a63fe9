"""Dynamic micro-batching: requests that arrive together are answered by one batched call.

Encoding 16 queries in one forward pass costs little more than encoding one, and one FAISS
search, one BM25 pass and one SQL hydration serve the whole batch. Each request thread hands
its item to the batcher and waits; a worker thread takes the first waiting item, gathers what
else arrives within `max_wait_ms` (or is already queued, up to `max_batch`), groups the items by
key (items with different keys cannot share a call) and runs one call per group. While a batch
runs, new requests queue up, so under load batches form without waiting at all; a lone request
waits at most `max_wait_ms`. `workers` threads gather and run batches, so one batch's Python
work overlaps another's encoder pass.

If a batched call fails, its items are retried one at a time so that each request gets its own
result or its own error, never a neighbour's.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from indexes.config import SearchParams
    from indexes.types import Passage
    from rag.runtime import Runtime

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
Q = TypeVar("Q")
R = TypeVar("R")


@dataclass
class _Pending(Generic[K, Q, R]):
    key: K
    item: Q
    future: Future[R] = field(default_factory=Future)


@dataclass
class BatchStats:
    """Counters for /metrics and the load benchmark: how well requests were batched."""

    batches: int = 0
    items: int = 0
    largest: int = 0

    def mean_batch(self) -> float:
        return self.items / self.batches if self.batches else 0.0


class MicroBatcher(Generic[K, Q, R]):
    """Runs `run_batch(key, items) -> results` (one result per item, in order) for items
    submitted concurrently with the same key."""

    def __init__(
        self,
        run_batch: Callable[[K, Sequence[Q]], Sequence[R]],
        *,
        max_batch: int = 64,
        max_wait_ms: float = 2.0,
        workers: int = 2,
        name: str = "micro-batcher",
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must be at least 0")
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.stats = BatchStats()
        self._queue: queue.SimpleQueue[_Pending[K, Q, R] | None] = queue.SimpleQueue()
        self._closed = False
        self._stats_lock = threading.Lock()
        # Two workers by default: one batch's Python work (BM25, SQL hydration) overlaps the
        # next batch's encoder pass, which runs in native code without the GIL.
        self._workers = [threading.Thread(target=self._loop, name=f"{name}-{i}", daemon=True) for i in range(workers)]
        for worker in self._workers:
            worker.start()

    def submit(self, key: K, item: Q, timeout: float | None = None) -> R:
        """Block until `item`'s result is ready; raise what its call raised."""
        if self._closed:
            raise RuntimeError("the batcher is closed")
        pending: _Pending[K, Q, R] = _Pending(key, item)
        self._queue.put(pending)
        return pending.future.result(timeout)

    def close(self) -> None:
        """Finish what is queued, then stop the worker."""
        if not self._closed:
            self._closed = True
            for _ in self._workers:
                self._queue.put(None)
            for worker in self._workers:
                worker.join(timeout=30)

    def _gather(self, first: _Pending[K, Q, R]) -> tuple[list[_Pending[K, Q, R]], bool]:
        batch = [first]
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                nxt = self._queue.get_nowait() if remaining <= 0 else self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            if nxt is None:
                return batch, True
            batch.append(nxt)
        return batch, False

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = self._gather(first)
            groups: dict[K, list[_Pending[K, Q, R]]] = {}
            for pending in batch:
                groups.setdefault(pending.key, []).append(pending)
            for key, members in groups.items():
                self._run(key, members)
            if stop:
                return

    def _run(self, key: K, members: list[_Pending[K, Q, R]]) -> None:
        with self._stats_lock:
            self.stats.batches += 1
            self.stats.items += len(members)
            self.stats.largest = max(self.stats.largest, len(members))
        try:
            results = list(self.run_batch(key, [m.item for m in members]))
            if len(results) != len(members):
                raise RuntimeError(f"batch of {len(members)} returned {len(results)} results")
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting request threads
            if len(members) == 1:
                members[0].future.set_exception(exc)
                return
            log.debug("batch of %d failed (%s); answering its items one by one", len(members), exc)
            for member in members:
                self._run(key, [member])
            return
        for member, result in zip(members, results):
            member.future.set_result(result)


def describe(batcher: MicroBatcher[Any, Any, Any] | None) -> dict[str, Any]:
    if batcher is None:
        return {"enabled": False}
    s = batcher.stats
    return {"enabled": True, "batches": s.batches, "items": s.items, "mean_batch": round(s.mean_batch(), 2), "largest": s.largest}


SearchKey = tuple[str, "str | None", int, "SearchParams"]
SEARCH_BATCH_WORKERS = 2  # batches of searches encoded at once (their Python work overlaps)


def search_batcher(runtime: Runtime, max_batch: int, max_wait_ms: float) -> MicroBatcher[SearchKey, str, list[Passage]]:
    """Batches concurrent searches of one collection, retriever kind, k and search parameters
    into one `retrieve_many` (one encoder pass, one FAISS and BM25 search, one SQL hydration)."""

    def run(key: SearchKey, queries: Sequence[str]) -> list[list[Passage]]:
        collection, kind, k, params = key
        return runtime.retriever(collection, kind, params).retrieve_many(list(queries), k)

    return MicroBatcher(run, max_batch=max_batch, max_wait_ms=max_wait_ms, workers=SEARCH_BATCH_WORKERS, name="search-batcher")
