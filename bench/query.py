"""Search latency, recall and cost of FAISS index types through `indexes.vector.VectorIndex`.

Two corpora: real passages (SciFact abstracts embedded with the default encoder, cached in
bench/results/) and synthetic 384-d vectors (a mixture of Gaussians on the unit sphere, which
has the cluster structure real embeddings have; uniform noise would flatter no index). For each
index: build time, bytes, single-query latency p50/p99 at k=10, and recall@10 against exact
search (Flat) on the same vectors.

    python bench/query.py [--synthetic 1000000] [--queries 500]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SCIFACT = REPO.parent / "shared" / "data" / "beir" / "scifact"
CACHE = REPO / "bench" / "results"
sys.path.insert(0, str(REPO))


def real_vectors(faiss_file: str | None) -> tuple[np.ndarray, np.ndarray]:
    """SciFact passages and queries embedded with the default encoder: passages read back from a
    collection's saved FAISS file when given (no re-embedding), else embedded once and cached."""
    if faiss_file:
        import faiss

        from indexes.encoder import DEFAULT_EMBEDDER, EncoderSpec, load_encoder

        index = faiss.read_index(faiss_file)
        flat = faiss.downcast_index(index.index) if hasattr(index, "id_map") else index
        docs = flat.reconstruct_n(0, flat.ntotal)
        queries = [json.loads(line)["text"] for line in (SCIFACT / "queries.jsonl").open()]
        return docs, load_encoder(EncoderSpec.detect(DEFAULT_EMBEDDER)).encode(queries, kind="query")
    cached = CACHE / "scifact-minilm.npz"
    if cached.exists():
        data = np.load(cached)
        return data["docs"], data["queries"]
    from indexes.encoder import DEFAULT_EMBEDDER, EncoderSpec, load_encoder

    encoder = load_encoder(EncoderSpec.detect(DEFAULT_EMBEDDER))  # torch, all cores
    docs = [json.loads(line) for line in (SCIFACT / "corpus.jsonl").open()]
    queries = [json.loads(line)["text"] for line in (SCIFACT / "queries.jsonl").open()]
    doc_vectors = encoder.encode([d["title"] + " " + d["text"] for d in docs])
    query_vectors = encoder.encode(queries, kind="query")
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(cached, docs=doc_vectors, queries=query_vectors)
    return doc_vectors, query_vectors


def synthetic_vectors(n: int, queries: int, dim: int = 384, clusters: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    def sample(count: int) -> np.ndarray:
        out = centres[rng.integers(0, clusters, count)] + 0.6 * rng.standard_normal((count, dim)).astype(np.float32)
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out
    return sample(n), sample(queries)


def bench_index(factory: str, params: str, docs: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> dict[str, float | str]:
    import faiss

    from indexes.vector import VectorIndex

    started = time.perf_counter()
    index = VectorIndex(docs.shape[1], factory)
    index.add(np.arange(len(docs), dtype=np.int64), docs)
    build = time.perf_counter() - started
    index.tune(params)
    latencies = []
    found = np.zeros((len(queries), 10), dtype=np.int64)
    for i, query in enumerate(queries):
        t = time.perf_counter()
        _, ids = index.search(query[None, :], 10)
        latencies.append(time.perf_counter() - t)
        found[i] = ids[0]
    recall = np.mean([len(set(found[i]) & set(truth[i])) / 10 for i in range(len(queries))])
    ms = np.asarray(latencies) * 1000
    return {
        "index": factory + (f" ({params})" if params else ""),
        "build_s": build,
        "bytes": len(faiss.serialize_index(index.index)),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "recall@10": float(recall),
    }


def run(name: str, docs: np.ndarray, queries: np.ndarray, configs: list[tuple[str, str]]) -> list[dict[str, float | str]]:
    import faiss

    exact = faiss.IndexFlatIP(docs.shape[1])
    exact.add(docs)
    _, truth = exact.search(queries, 10)
    rows = []
    print(f"\n{name}: {len(docs):,} vectors x {docs.shape[1]}, {len(queries)} queries, k=10")
    print(f"{'index':<34} {'build s':>8} {'MB':>8} {'p50 ms':>8} {'p99 ms':>8} {'recall@10':>9}")
    for factory, params in configs:
        row = bench_index(factory, params, docs, queries, truth)
        rows.append(row)
        print(f"{row['index']:<34} {row['build_s']:>8.1f} {row['bytes'] / 1e6:>8.1f} {row['p50_ms']:>8.3f} "
              f"{row['p99_ms']:>8.3f} {row['recall@10']:>9.3f}", flush=True)
    flat = rows[0]
    for row in rows[1:]:
        print(f"  {row['index']}: p50 x{float(flat['p50_ms']) / float(row['p50_ms']):.1f} faster than Flat, "
              f"{float(row['bytes']) / float(flat['bytes']):.2f} of its memory, recall@10 {row['recall@10']:.3f}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--synthetic", type=int, default=1_000_000, help="synthetic vectors (0 to skip)")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--faiss", help="a collection's vectors.faiss holding SciFact passages (skips embedding)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    docs, queries = real_vectors(args.faiss)
    run(f"SciFact passages (real, {len(docs):,})", docs, queries[: args.queries], [
        ("Flat", ""),
        ("HNSW32", "efSearch=64"),
        ("IVF64,PQ48", "nprobe=16"),
    ])
    if args.synthetic:
        sdocs, squeries = synthetic_vectors(args.synthetic, args.queries)
        nlist = int(4 * np.sqrt(args.synthetic))
        run("synthetic", sdocs, squeries, [
            ("Flat", ""),
            ("HNSW32", "efSearch=64"),
            (f"IVF{nlist},PQ48", "nprobe=32"),
            (f"IVF{int(np.sqrt(args.synthetic))},SQ8", "nprobe=16"),
        ])


if __name__ == "__main__":
    main()
