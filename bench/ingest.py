"""Ingestion throughput and quality on BEIR SciFact: rag vs. the script a user would write.

Baseline: sentence-transformers `encode(batch_size=64)` on "title text" + `faiss.IndexFlatIP`.
Ours: `rag` ingestion (parse, chunk, embed, SQL + FAISS writes) with fp32 and int8 encoders.
Each variant runs in its own subprocess so peak RSS is its own; quality is nDCG@10 on the train
qrels with the same metric code. Prints a table and the throughput ratios against the baseline.

    python bench/ingest.py [--limit N] [--variants baseline,ours,ours-int8]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCIFACT = REPO.parent / "shared" / "data" / "beir" / "scifact"
sys.path.insert(0, str(REPO))


def _corpus(limit: int | None) -> Path:
    """SciFact's corpus, or its first `limit` documents plus every document the qrels need."""
    if not limit:
        return SCIFACT / "corpus.jsonl"
    from rag.evaluation.retrieval import read_beir

    needed = {d for docs in read_beir(SCIFACT, "train").qrels.values() for d in docs}
    out = Path(tempfile.mkdtemp()) / "corpus.jsonl"
    with (SCIFACT / "corpus.jsonl").open() as src, out.open("w") as dst:
        for i, line in enumerate(src):
            if i < limit or json.loads(line)["_id"] in needed:
                dst.write(line)
    return out


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_baseline(corpus: Path) -> dict[str, float]:
    import faiss
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from indexes.encoder import DEFAULT_EMBEDDER, resolve_model_path
    from rag.evaluation.retrieval import read_beir, trec_metrics

    records = [json.loads(line) for line in corpus.open()]
    model = SentenceTransformer(resolve_model_path(DEFAULT_EMBEDDER), device="cpu")
    started = time.perf_counter()
    vectors = model.encode([r["title"] + " " + r["text"] for r in records], batch_size=64)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(np.asarray(vectors, dtype=np.float32))
    seconds = time.perf_counter() - started
    data = read_beir(SCIFACT, "train")
    qids = list(data.queries)
    scores, ids = index.search(model.encode([data.queries[q] for q in qids], batch_size=64), 100)
    run = {q: {records[i]["_id"]: float(s) for s, i in zip(scores[n], ids[n])} for n, q in enumerate(qids)}
    metrics = trec_metrics(data.qrels, run)
    return {
        "documents": len(records),
        "passages": len(records),
        "seconds": seconds,
        "ndcg@10": metrics["ndcg@10"],
        "recall@100": metrics["recall@100"],
        "peak_rss_mb": _peak_rss_mb(),
    }


def run_ours(corpus: Path, quantize: bool) -> dict[str, float]:
    from rag.evaluation.retrieval import evaluate_retrieval, read_beir
    from rag.runtime import Runtime
    from rag.settings import Settings

    home = Path(tempfile.mkdtemp(prefix="rag-bench-"))
    runtime = Runtime(Settings(home=home, quantize=quantize, retriever="dense"))
    collection = runtime.writable_collection("scifact")
    ingestor = runtime.ingestor(collection)
    started = time.perf_counter()
    report = ingestor.ingest_paths([str(corpus)])
    seconds = time.perf_counter() - started
    result = evaluate_retrieval(runtime.retriever("scifact", "dense"), read_beir(SCIFACT, "train"))
    return {
        "documents": report.documents_added,
        "passages": report.chunks_added,
        "seconds": seconds,
        "embed_seconds": report.embed_seconds,
        "ndcg@10": result["ndcg@10"],
        "recall@100": result["recall@100"],
        "peak_rss_mb": _peak_rss_mb(),
    }


def run_growth(total: int, step: int, home: Path) -> list[dict[str, float]]:
    """Store write time per 1,000 documents as the collection grows (owned by `store`).

    Encoder-free: SciFact abstracts repeated with distinct ids, random unit vectors (384-d), one
    chunk per document, written through `CollectionWriter.write` in batches of 1,000 documents, so
    what is timed is SQL + segments + BM25 + publish, the part whose cost could grow with size."""
    import json
    import tempfile

    import numpy as np

    from indexes.encoder import EncoderSpec
    from indexes.store import CollectionConfig, NewDocument, Store
    from indexes.types import Chunk, Document

    texts = []
    with (SCIFACT / "corpus.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            texts.append((record["title"], record["text"][:1000]))
    store = Store(Path(tempfile.mkdtemp(dir=home)))
    spec = EncoderSpec(model="bench/random", pooling="mean", normalize=True)
    collection = store.create_collection("growth", CollectionConfig(encoder=spec, dim=384))
    rng = np.random.default_rng(0)
    rows: list[dict[str, float]] = []
    written, mark, elapsed = 0, time.perf_counter(), 0.0
    with collection.writer() as writer:
        while written < total:
            batch = []
            for i in range(written, written + 1000):
                title, text = texts[i % len(texts)]
                vector = rng.normal(size=(1, 384)).astype(np.float32)
                batch.append(
                    NewDocument(Document(f"doc#{i}", text, title, external_id=str(i)), f"h{i}", [Chunk(text, 0, len(text), 0)], vector / np.linalg.norm(vector))
                )
            started = time.perf_counter()
            writer.write(batch)
            elapsed += time.perf_counter() - started
            written += 1000
            if written % step == 0:
                rows.append({"documents": written, "seconds_per_1000": elapsed / (step / 1000), "segments": len(writer.segments)})
                elapsed = 0.0
    del mark
    store.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--growth", type=int, default=0, help="store growth mode: write this many documents (e.g. 50000), print seconds per 1,000 every --step")
    parser.add_argument("--step", type=int, default=5000)
    parser.add_argument("--limit", type=int, default=0, help="first N documents (+ all judged ones); 0 = all")
    parser.add_argument("--variants", default="baseline,ours,ours-int8")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.growth:
        import tempfile

        rows = run_growth(args.growth, args.step, Path(tempfile.gettempdir()))
        first = rows[0]["seconds_per_1000"]
        print("| documents | s per 1,000 docs (last step) | ratio to first | segments |")
        print("| --- | --- | --- | --- |")
        for row in rows:
            print(f"| {row['documents']:,} | {row['seconds_per_1000']:.3f} | x{row['seconds_per_1000'] / first:.2f} | {row['segments']} |")
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    if args.variant:  # child process: run one variant, print JSON
        corpus = Path(args.corpus)
        result = run_baseline(corpus) if args.variant == "baseline" else run_ours(corpus, args.variant == "ours-int8")
        print(json.dumps(result))
        return

    corpus = _corpus(args.limit)
    results: dict[str, dict[str, float]] = {}
    for variant in args.variants.split(","):
        child = subprocess.run(
            [sys.executable, __file__, "--variant", variant, "--corpus", str(corpus)],
            capture_output=True, text=True, check=True,
        )
        results[variant] = json.loads(child.stdout.strip().splitlines()[-1])
        r = results[variant]
        print(f"{variant:>10}: {r['documents']} docs, {r['passages']} passages in {r['seconds']:.1f}s "
              f"-> {r['passages'] / r['seconds']:.1f} passages/s, {r['documents'] / r['seconds']:.1f} docs/s, "
              f"peak RSS {r['peak_rss_mb']:.0f} MB, nDCG@10 {r['ndcg@10']:.4f}, Recall@100 {r['recall@100']:.4f}",
              flush=True)
    if "baseline" in results:
        base = results["baseline"]
        for variant, r in results.items():
            if variant != "baseline":
                print(f"ratio {variant}/baseline: passages/s x{(r['passages'] / r['seconds']) / (base['passages'] / base['seconds']):.2f}, "
                      f"docs/s x{(r['documents'] / r['seconds']) / (base['documents'] / base['seconds']):.2f}, "
                      f"nDCG@10 {r['ndcg@10'] - base['ndcg@10']:+.4f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
