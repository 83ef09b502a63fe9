"""Synchronous writes (deleting a document) off the threads that serve reads, in a bounded queue.

Such a write may wait minutes for the collection's writer lock (a CLI ingest holds it). Waiting on
the server's request threads would let a burst of them take every thread, and health checks and
searches would time out; here they wait on threads of their own, and when `limit` already wait the
next one is turned away at once with 503 and Retry-After.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from api.errors import ApiError

T = TypeVar("T")


class WriteQueue:
    def __init__(self, workers: int = 2, limit: int = 16) -> None:
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rag-write")
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        """`work(*args)` on a write thread; its slot is freed when the work ends, not when the
        client gives up, so writes the server still owes count against the bound."""
        if not self._slots.acquire(blocking=False):
            raise ApiError(
                503,
                "writes_busy",
                f"{self.limit} writes are already waiting for a collection's writer lock; try again later",
                headers={"Retry-After": "5"},
            )
        try:
            future = self.pool.submit(work, *args)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
