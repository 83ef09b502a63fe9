"""Dynamic micro-batching of concurrent searches (api/batching.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from api.batching import MicroBatcher, search_batcher


def _concurrently(n: int, call) -> list[object]:  # type: ignore[no-untyped-def]
    results: list[object] = [None] * n
    barrier = threading.Barrier(n)

    def worker(i: int) -> None:
        barrier.wait()
        try:
            results[i] = call(i)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_concurrent_items_share_calls_and_each_gets_its_own_result() -> None:
    calls: list[tuple[str, list[int]]] = []

    def run(key: str, items: Sequence[int]) -> list[int]:
        calls.append((key, list(items)))
        time.sleep(0.02)  # a batch in progress: newcomers queue up behind it
        return [i * 10 for i in items]

    batcher: MicroBatcher[str, int, int] = MicroBatcher(run, max_batch=64, max_wait_ms=20)
    try:
        results = _concurrently(16, lambda i: batcher.submit("a" if i % 2 else "b", i))
    finally:
        batcher.close()
    assert results == [i * 10 for i in range(16)]
    assert sum(len(items) for _, items in calls) == 16
    assert len(calls) < 16  # some requests were answered together
    assert all({i % 2 for i in items} == ({1} if key == "a" else {0}) for key, items in calls)  # never mixed keys
    assert batcher.stats.largest > 1


def test_max_batch_bounds_a_call() -> None:
    sizes: list[int] = []

    def run(key: str, items: Sequence[int]) -> list[int]:
        sizes.append(len(items))
        time.sleep(0.01)
        return list(items)

    batcher: MicroBatcher[str, int, int] = MicroBatcher(run, max_batch=4, max_wait_ms=20)
    try:
        assert _concurrently(12, lambda i: batcher.submit("k", i)) == list(range(12))
    finally:
        batcher.close()
    assert max(sizes) <= 4


def test_a_failing_item_fails_alone() -> None:
    def run(key: str, items: Sequence[int]) -> list[int]:
        if 3 in items:
            raise ValueError("item 3 is bad")
        time.sleep(0.01)
        return [-i for i in items]

    batcher: MicroBatcher[str, int, int] = MicroBatcher(run, max_batch=64, max_wait_ms=20)
    try:
        results = _concurrently(8, lambda i: batcher.submit("k", i))
    finally:
        batcher.close()
    assert isinstance(results[3], ValueError) and "item 3" in str(results[3])
    assert [r for i, r in enumerate(results) if i != 3] == [-i for i in range(8) if i != 3]


def test_a_lone_request_waits_at_most_the_wait_bound() -> None:
    batcher: MicroBatcher[str, int, int] = MicroBatcher(lambda k, items: list(items), max_batch=64, max_wait_ms=5)
    try:
        started = time.perf_counter()
        assert batcher.submit("k", 7) == 7
        assert time.perf_counter() - started < 1.0
    finally:
        batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit("k", 1)


def test_batched_search_returns_what_each_query_gets_alone(tmp_path: Path) -> None:
    """The real thing: concurrent searches through the batcher equal one-at-a-time retrieval."""
    from indexes.config import SearchParams
    from indexes.types import Document
    from rag.runtime import Runtime
    from rag.settings import Settings
    from tests.test_encoder import _scifact_texts

    runtime = Runtime(Settings(home=tmp_path, retriever="hybrid"))
    texts = _scifact_texts(30)
    runtime.ingestor(runtime.writable_collection("c")).ingest_documents(
        [Document(source=f"d{i}", text=t) for i, t in enumerate(texts)]
    )
    queries = [t.split(".")[0] for t in texts[:12]]
    alone = [[p.chunk_id for p in runtime.retriever("c").retrieve(q, 5)] for q in queries]
    batcher = search_batcher(runtime, max_batch=32, max_wait_ms=10)
    try:
        together = _concurrently(len(queries), lambda i: batcher.submit(("c", None, 5, SearchParams()), queries[i]))
    finally:
        batcher.close()
    assert [[p.chunk_id for p in r] for r in together] == alone  # type: ignore[union-attr]
    assert batcher.stats.batches < len(queries)
