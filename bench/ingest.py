"""Ingestion throughput and quality on BEIR SciFact: rag vs. the script a user would write.

Baseline: sentence-transformers `encode(batch_size=64)` on "title text" + `faiss.IndexFlatIP`,
the ten lines a user would write, over the same all-MiniLM-L6-v2 folder.
Ours: `rag` ingestion (parse, chunk, embed, SQL + FAISS writes) with each encoder runtime:
`auto` (RAG_ENCODER_RUNTIME=auto: OpenVINO bf16 on CPUs with native bf16, else ONNX Runtime
static int8), `torch` (the reference), `onnx` (ONNX Runtime, fp32), `onnx-int8` (static, calibrated
int8: what `auto` runs on CPUs without native bf16), `openvino`, `torch-int8`. It prints the CPU
flags first and what `auto` resolves to on this CPU.

Each variant runs in its own subprocess (its own peak RSS, no warm caches shared). The machine
is noisy, so variants run in rounds, interleaved and in rotating order, and the script prints
the median documents/s of each, the ratio of medians against the baseline, the median of the
per-round ratios, and the load average around each run. `--quality` adds nDCG@10 (train qrels,
same metric code) for each variant, from the first round's collection (needs every judged
document: use it on the whole corpus or with --limit, which always keeps the judged ones).

    python bench/ingest.py [--limit N] [--rounds 3] [--variants baseline,onnx-int8] [--quality]
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCIFACT = REPO.parent / "shared" / "data" / "beir" / "scifact"
sys.path.insert(0, str(REPO))


def _corpus(limit: int | None, work: Path, judged: bool = True) -> Path:
    """SciFact's corpus, or its first `limit` documents (plus every document the qrels need when
    `judged`, so nDCG stays comparable)."""
    if not limit:
        return SCIFACT / "corpus.jsonl"
    from rag.evaluation.retrieval import read_beir

    needed = {d for docs in read_beir(SCIFACT, "train").qrels.values() for d in docs} if judged else set()
    out = work / "corpus.jsonl"
    with (SCIFACT / "corpus.jsonl").open() as src, out.open("w") as dst:
        for i, line in enumerate(src):
            if i < limit or json.loads(line)["_id"] in needed:
                dst.write(line)
    return out


def _peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: unlike getrusage's ru_maxrss, not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_baseline(corpus: Path, quality: bool) -> dict[str, float]:
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
    result: dict[str, float] = {
        "documents": len(records),
        "passages": len(records),
        "seconds": seconds,
        "peak_rss_mb": _peak_rss_mb(),
    }
    if quality:
        data = read_beir(SCIFACT, "train")
        qids = list(data.queries)
        scores, ids = index.search(model.encode([data.queries[q] for q in qids], batch_size=64), 100)
        run = {q: {records[i]["_id"]: float(s) for s, i in zip(scores[n], ids[n])} for n, q in enumerate(qids)}
        metrics = trec_metrics(data.qrels, run)
        result["ndcg@10"] = result["dense_ndcg@10"] = metrics["ndcg@10"]
        result["dense_recall@100"] = metrics["recall@100"]
    return result


# variant -> (encoder runtime, int8, precision); "auto" is RAG_ENCODER_RUNTIME=auto with RAG_QUANTIZE
# and RAG_PRECISION unset (OpenVINO bf16 on a CPU with native bf16, else ONNX Runtime static int8)
RUNTIMES: dict[str, tuple[str, bool | None, str]] = {
    "auto": ("auto", None, "auto"),
    "torch": ("torch", False, "auto"),
    "torch-int8": ("torch", True, "auto"),
    "onnx": ("onnx", False, "auto"),
    "onnx-int8": ("onnx", True, "auto"),
    "openvino": ("openvino", False, "auto"),
    "openvino-fp32": ("openvino", False, "float32"),
}


def run_ours(corpus: Path, variant: str, quality: bool, models: Path, work: Path) -> dict[str, float | str]:
    from rag.evaluation.retrieval import evaluate_retrieval, read_beir
    from rag.runtime import Runtime
    from rag.settings import Settings

    encoder_runtime, quantize, precision = RUNTIMES[variant]
    home = Path(tempfile.mkdtemp(prefix="home-", dir=work))
    # The exported ONNX graphs are made once per bench run (a one-off cost, like a download).
    (home / "models").symlink_to(models, target_is_directory=True)
    runtime = Runtime(Settings(home=home, quantize=quantize, encoder_runtime=encoder_runtime, precision=precision, retriever="dense"))
    collection = runtime.writable_collection("scifact")
    ingestor = runtime.ingestor(collection)  # loads the encoder: not timed, as for the baseline
    started = time.perf_counter()
    report = ingestor.ingest_paths([str(corpus)])
    seconds = time.perf_counter() - started
    described = runtime.encoder_for(collection).describe()
    result: dict[str, float | str] = {
        "documents": report.documents_added,
        "passages": report.chunks_added,
        "seconds": seconds,
        "embed_seconds": report.embed_seconds,
        "peak_rss_mb": _peak_rss_mb(),
        "encoder": " ".join(str(described[k]) for k in ("runtime", "precision") if k in described)
        + (" int8" if described["quantized"] else ""),
    }
    if quality:
        data = read_beir(SCIFACT, "train")
        for kind in ("dense", "hybrid"):
            metrics = evaluate_retrieval(runtime.retriever("scifact", kind), data)
            result[f"{kind}_ndcg@10"] = metrics["ndcg@10"]
            result[f"{kind}_recall@100"] = metrics["recall@100"]
        result["ndcg@10"] = result["dense_ndcg@10"]
    return result


def _median(values: list[float]) -> float:
    import statistics

    return statistics.median(values)


def _prepare_models(variants: list[str], work: Path) -> Path:
    """Export the ONNX graphs the variants need, once, before anything is timed."""
    from indexes.encoder import DEFAULT_EMBEDDER, EncoderSpec, choose_runtime
    from indexes.encoder.export import exported_model

    models = work / "models"
    models.mkdir()
    spec = EncoderSpec.detect(DEFAULT_EMBEDDER)
    for variant in variants:
        if variant in RUNTIMES:
            runtime, int8 = choose_runtime(RUNTIMES[variant][0], "cpu", RUNTIMES[variant][1])
            if runtime != "torch":
                exported_model(spec, models, "ort-int8" if int8 else ("ort" if runtime == "onnx" else "plain"))
    return models


def run_growth(total: int, step: int, home: Path) -> list[dict[str, float]]:
    """Store write time per 1,000 documents as the collection grows (owned by `store`).

    Encoder-free: SciFact abstracts repeated with distinct ids, random unit vectors (384-d), one
    chunk per document, written through `CollectionWriter.write` in batches of 1,000 documents, so
    what is timed is SQL + segments + BM25 + publish, the part whose cost could grow with size."""
    import json

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
    parser.add_argument("--limit", type=int, default=0, help="first N documents (+ all judged ones with --quality); 0 = all")
    parser.add_argument("--variants", default="baseline,torch,onnx-int8", help=f"baseline and any of {', '.join(RUNTIMES)}")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are quoted")
    parser.add_argument("--quality", action="store_true", help="nDCG@10 of each variant (first round)")
    parser.add_argument("--json", type=Path, help="also write every run to this file")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    parser.add_argument("--models", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.work:  # child process: the parent's folder
        work = Path(args.work)
    else:  # everything this run writes, removed when it ends
        work = Path(tempfile.mkdtemp(prefix="rag-bench-"))
        atexit.register(shutil.rmtree, work, ignore_errors=True)
    if args.growth:
        rows = run_growth(args.growth, args.step, work)
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
        if args.variant == "baseline":
            result = run_baseline(corpus, args.quality)
        else:
            result = run_ours(corpus, args.variant, args.quality, Path(args.models), work)
        print(json.dumps(result))
        return

    from indexes.encoder import cpu_summary

    print(cpu_summary(), flush=True)
    variants = args.variants.split(",")
    unknown = [v for v in variants if v != "baseline" and v not in RUNTIMES]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; use baseline or {', '.join(RUNTIMES)}")
    corpus = _corpus(args.limit, work, args.quality)
    models = _prepare_models(variants, work)
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    for round_no in range(args.rounds):
        order = variants[round_no % len(variants):] + variants[: round_no % len(variants)]
        for variant in order:
            quality = args.quality and round_no == 0
            load_before = os.getloadavg()[0]
            child = subprocess.run(
                [sys.executable, __file__, "--variant", variant, "--corpus", str(corpus), "--models", str(models), "--work", str(work)]
                + (["--quality"] if quality else []),
                capture_output=True, text=True,
            )
            if child.returncode:
                raise SystemExit(f"{variant} failed:\n{child.stderr[-3000:]}")
            r = json.loads(child.stdout.strip().splitlines()[-1])
            r["round"] = round_no
            r["load_before"] = load_before
            r["load_after"] = os.getloadavg()[0]
            runs[variant].append(r)
            quality_text = (
                "".join(f", {k} {v:.4f}" for k, v in r.items() if k.endswith("ndcg@10") and k != "ndcg@10")
                if quality else ""
            )
            encoder = f" ({r['encoder']})" if "encoder" in r else ""
            print(f"round {round_no + 1} {variant:>10}{encoder}: {r['documents']} docs, {r['passages']} passages in "
                  f"{r['seconds']:.1f}s -> {r['documents'] / r['seconds']:.2f} docs/s, "
                  f"{r['passages'] / r['seconds']:.1f} passages/s, peak RSS {r['peak_rss_mb']:.0f} MB, "
                  f"load {r['load_before']:.1f}->{r['load_after']:.1f}"
                  + (f", embedding {r['embed_seconds'] / r['seconds']:.0%} of the time" if "embed_seconds" in r else "")
                  + quality_text, flush=True)

    def docs_per_s(r: dict[str, float]) -> float:
        return r["documents"] / r["seconds"]

    print("\nmedians over rounds:")
    for variant, rs in runs.items():
        print(f"  {variant:>10}: {_median([docs_per_s(r) for r in rs]):.2f} docs/s, "
              f"{_median([r['passages'] / r['seconds'] for r in rs]):.1f} passages/s, "
              f"peak RSS {_median([r['peak_rss_mb'] for r in rs]):.0f} MB")
    if "baseline" in runs:
        base = runs["baseline"]
        for variant, rs in runs.items():
            if variant == "baseline":
                continue
            of_medians = _median([docs_per_s(r) for r in rs]) / _median([docs_per_s(r) for r in base])
            per_round = _median([docs_per_s(r) / docs_per_s(b) for r, b in zip(sorted(rs, key=lambda x: x["round"]), sorted(base, key=lambda x: x["round"]))])
            print(f"ratio {variant}/baseline docs/s: x{of_medians:.2f} (ratio of medians), "
                  f"x{per_round:.2f} (median of per-round ratios)")
    loads = [r[k] for rs in runs.values() for r in rs for k in ("load_before", "load_after")]
    print(f"load average (1 min) during the runs: median {_median(loads):.1f}, range {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
