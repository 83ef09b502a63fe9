"""Ingestion spread over a Ray cluster: parse and chunk in Ray Data tasks, embed in an actor
pool, write here.

The driver runs the same `Ingestor` as a single-process ingest, so discovery, content hashes,
skipping, pruning and the run record are the same code; only the stage from files (or in-memory
documents) to embedded documents moves to Ray Data. The vectors stream back to this process, the
collection's single writer, which applies them through the store's write protocol in batches of
`batch_chunks` (`Ingestor._write_batch`, the one call into the store).

Failures: Ray Data retries a task and restarts an actor whose worker died; the rows are
recomputed, never half-delivered. SQL allocates chunk ids when the driver writes, so a retry
cannot consume ids, and a row for a source this run has already written is dropped, so each
document is written once. A file whose result never came back fails the run loudly.

Workers read input files by path: on a multi-machine cluster the files must be on a filesystem
every node mounts at the same path (as Ray Data's own file readers expect).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from indexes.config import CollectionConfig
from indexes.encoder import choose_runtime, encoder_dtype, load_encoder
from indexes.errors import RagError
from indexes.store import NewDocument
from indexes.types import Chunk, Document
from ingest.chunking import SentenceWindowChunker
from ingest.loaders import InputLimits
from ingest.pipeline import FileScan, Ingestor, IngestReport, scan_file
from ingest.sources import ingest_label

log = logging.getLogger(__name__)

# Columns of every row between the stages (one schema, strings and bytes only, so Arrow blocks
# stay simple): a document row carries `document`/`digest`/`chunks` (and `vectors` after
# embedding); a file row carries `scan`, the file's bookkeeping for the driver.
_COLUMNS = ("source", "document", "digest", "chunks", "scan", "vectors")


@dataclass(frozen=True)
class RayOptions:
    """Where the cluster is and how wide the embedding stage runs."""

    address: str = "auto"  # "auto" (RAY_ADDRESS or a `ray start` on this node), "local", or host:port
    embed_actors: int = 1  # actor pool size (`concurrency` of the embedding stage)
    batch_size: int = 32  # documents per embedding call
    cpus_per_actor: float = 1.5  # with the chunking stage's 0.5, a 2-CPU node runs one of each
    gpus_per_actor: float = 0.0  # > 0: each embedding actor takes that share of a GPU and runs on cuda
    threads: int | None = None  # encoder threads per actor; default: its CPU share, rounded up


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker needs to turn files into chunks and chunks into the collection's vectors:
    the collection's own config (encoder, chunking, what is embedded) travels whole."""

    collection: CollectionConfig
    limits: InputLimits
    # As requested (RAG_ENCODER_RUNTIME, RAG_QUANTIZE, RAG_PRECISION): `auto` is resolved by each
    # actor for its own node's device and CPU, as a single-process ingest resolves it for its own.
    encoder_runtime: str = "auto"
    quantize: bool | None = None
    precision: str = "auto"
    cache_dir: str | None = None  # exported ONNX/OpenVINO graphs (RAG_HOME/models, on every node)

    @property
    def graph_cache(self) -> Path | None:
        return Path(self.cache_dir) if self.cache_dir else None


def connect(address: str) -> None:
    """Join the Ray cluster at `address` ("local" starts a private one in this process)."""
    import ray

    if ray.is_initialized():
        return
    try:
        if address == "local":
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
        else:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
    except ConnectionError as exc:
        raise RagError(
            f"no Ray cluster at {address!r} ({exc}); start one with `ray start --head`, "
            "give its address with --ray-address HOST:6379, or use --ray-address local"
        ) from None


# -- worker side ------------------------------------------------------------------------------
def _empty_row(source: str) -> dict[str, Any]:
    return {"source": source, "document": "", "digest": "", "chunks": "", "scan": "", "vectors": b""}


def _doc_row(doc: Document, digest: str, chunks: list[Chunk]) -> dict[str, Any]:
    row = _empty_row(doc.source)
    row["document"] = json.dumps(
        {"source": doc.source, "text": doc.text, "title": doc.title, "metadata": doc.metadata, "external_id": doc.external_id},
        ensure_ascii=False,
        default=str,
    )
    row["digest"] = digest
    row["chunks"] = json.dumps([[c.text, c.start, c.end, c.ordinal] for c in chunks], ensure_ascii=False)
    return row


def _columns(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {name: np.array([r[name] for r in rows], dtype=object) for name in _COLUMNS}


class Splitter:
    """Parse (files) and chunk (files and in-memory documents); loads the tokenizer once."""

    def __init__(self, config: WorkerConfig) -> None:
        from indexes.encoder import encoder_tokenizer

        collection = config.collection
        tokenizer = encoder_tokenizer(collection.encoder, config.graph_cache)
        self.chunker = SentenceWindowChunker(tokenizer, collection.chunk_tokens, collection.chunk_overlap)
        self.config = config

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        rows: list[dict[str, Any]] = []
        for path, label, known, document, digest in zip(
            batch["path"], batch["label"], batch["known"], batch["document"], batch["digest"]
        ):
            if path:
                scan = scan_file(Path(path), {s: (0, h) for s, h in json.loads(known).items()}, self.config.limits, label)
                for doc, doc_digest in scan.changed:
                    rows.append(_doc_row(doc, doc_digest, self.chunker.split(doc.text)))
                summary = _empty_row(scan.source)
                summary["scan"] = json.dumps(
                    {
                        "seen": scan.seen,
                        "unchanged": scan.unchanged,
                        "file_unchanged": scan.file_unchanged,
                        "duplicates": scan.duplicates,
                        "errors": scan.errors,
                    }
                )
                rows.append(summary)
            else:
                doc = Document(**json.loads(document))
                rows.append(_doc_row(doc, digest, self.chunker.split(doc.text)))
        return _columns(rows)


class Embedder:
    """The collection's encoder, loaded once per actor; adds each document's vectors as bytes."""

    def __init__(self, config: WorkerConfig, device: str, threads: int) -> None:
        runtime, quantize = choose_runtime(config.encoder_runtime, device, config.quantize)
        self.encoder = load_encoder(
            config.collection.encoder,
            runtime,
            device=device,
            dtype=encoder_dtype(runtime, config.precision, device),
            quantize=quantize,
            threads=threads,
            cache_dir=config.graph_cache,
        )
        self.collection = config.collection

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        texts: list[str] = []
        counts: list[int] = []
        for document, chunks in zip(batch["document"], batch["chunks"]):
            if not document:
                counts.append(-1)
                continue
            title = json.loads(document)["title"]
            pieces = [c[0] for c in json.loads(chunks)]
            texts.extend(self.collection.embedding_text(title, p) for p in pieces)
            counts.append(len(pieces))
        vectors = self.encoder.encode(texts, kind="passage")
        out: list[bytes] = []
        offset = 0
        for n in counts:
            out.append(b"" if n < 0 else vectors[offset : offset + n].tobytes())
            offset += max(n, 0)
        result = {name: batch[name] for name in _COLUMNS if name != "vectors"}
        result["vectors"] = np.array(out, dtype=object)
        return result


# -- driver side ------------------------------------------------------------------------------
class DistributedIngestor(Ingestor):
    """An `Ingestor` whose parse, chunk and embed stages run on a Ray cluster."""

    def __init__(
        self,
        *args: Any,
        ray: RayOptions,
        encoder_runtime: str = "auto",
        quantize: bool | None = None,
        precision: str = "auto",
        cache_dir: Path | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.ray = ray
        self.worker_config = WorkerConfig(
            collection=self.collection.config,
            limits=self.limits,
            encoder_runtime=encoder_runtime,
            quantize=quantize,
            precision=precision,
            cache_dir=str(cache_dir) if cache_dir else None,
        )

    def _ingest_files(
        self,
        files: list[Path],
        known: dict[str, tuple[int, str]],
        seen: set[str],
        report: IngestReport,
        folders: list[Path],
    ) -> None:
        names = {str(f) for f in files}
        by_file: dict[str, dict[str, str]] = {}
        for source, (_, digest) in known.items():
            owner = _owning_file(source, names)
            if owner is not None:
                by_file.setdefault(owner, {})[source] = digest
        items = [
            {
                "path": str(f),
                "label": ingest_label(f, folders),
                "known": json.dumps(by_file.get(str(f), {})),
                "document": "",
                "digest": "",
            }
            for f in files
        ]
        self._run(items, report, seen, expected_files=names)

    def _write_all(self, items: Iterable[tuple[Document, str]], report: IngestReport) -> None:
        rows = [
            {"path": "", "label": "", "known": "", "document": _doc_row(doc, digest, [])["document"], "digest": digest}
            for doc, digest in items
        ]
        if rows:
            self._run(rows, report, set(), expected_files=set())

    def _run(self, items: list[dict[str, str]], report: IngestReport, seen: set[str], expected_files: set[str]) -> None:
        import ray.data

        connect(self.ray.address)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = self.show_progress
        context.print_on_execution_start = False
        started = time.perf_counter()
        gpu = self.ray.gpus_per_actor > 0
        # Threads rounded up from the reservation: 1.5 CPUs run 2 encoder threads, as the chunking
        # stage's 0.5 is mostly waiting on the actor (one thread gave x0.37 of a single process on 2
        # cores, two x0.61-0.65: README, Scaling out).
        threads = self.ray.threads or max(1, math.ceil(self.ray.cpus_per_actor))
        dataset = (
            ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 64)))
            .map_batches(
                Splitter,
                fn_constructor_kwargs={"config": self.worker_config},
                batch_size=1,
                concurrency=(1, max(1, self.ray.embed_actors)),
                num_cpus=0.5,
            )
            .map_batches(
                Embedder,
                fn_constructor_kwargs={"config": self.worker_config, "device": "cuda" if gpu else "cpu", "threads": threads},
                batch_size=self.ray.batch_size,
                concurrency=self.ray.embed_actors,
                num_cpus=self.ray.cpus_per_actor,
                num_gpus=self.ray.gpus_per_actor if gpu else None,
            )
        )
        # Ray's driver prints cluster events ("a worker died ...") on stdout; they are diagnostics,
        # so they go to stderr while this runs, keeping stdout for results (`--json`).
        with contextlib.redirect_stdout(sys.stderr):
            done_files = self._consume(dataset.iter_rows(), report, seen)
        report.embed_seconds += time.perf_counter() - started
        missing = expected_files - done_files
        if missing:
            raise RagError(f"{len(missing)} files never came back from the Ray cluster, e.g. {sorted(missing)[0]}")

    def _consume(self, rows: Iterable[dict[str, Any]], report: IngestReport, seen: set[str]) -> set[str]:
        """Tally file rows; write document rows in batches of `batch_chunks`, each source once.
        Returns the files whose results came back."""
        written: set[str] = set()
        done_files: set[str] = set()
        pending: list[NewDocument] = []
        size = 0
        for row in rows:
            if row["scan"]:
                if row["source"] not in done_files:
                    done_files.add(row["source"])
                    _tally(row["source"], json.loads(row["scan"]), seen, report)
                continue
            source = row["source"]
            if source in written:
                continue  # a retried task's second copy
            written.add(source)
            new = _new_document(row, self.collection.config.dim)
            if not new.chunks:
                report.errors.append({"source": source, "error": f"{source}: no text to index"})
                continue
            pending.append(new)
            size += len(new.chunks)
            if size >= self.batch_chunks:
                self._write_batch(pending, report)
                pending, size = [], 0
        if pending:
            self._write_batch(pending, report)
        return done_files


def _owning_file(source: str, files: set[str]) -> str | None:
    """The input file a stored source belongs to: itself, or `FILE#record`."""
    if source in files:
        return source
    at = source.find("#")
    while at != -1:
        if source[:at] in files:
            return source[:at]
        at = source.find("#", at + 1)
    return None


def _tally(source: str, scan: dict[str, Any], seen: set[str], report: IngestReport) -> None:
    FileScan(
        source,
        seen=scan["seen"],
        unchanged=scan["unchanged"],
        file_unchanged=scan["file_unchanged"],
        duplicates=scan["duplicates"],
        errors=scan["errors"],
    ).tally(seen, report)


def _new_document(row: dict[str, Any], dim: int) -> NewDocument:
    chunks = [Chunk(text=t, start=s, end=e, ordinal=o) for t, s, e, o in json.loads(row["chunks"])]
    vectors = np.frombuffer(row["vectors"], dtype=np.float32).reshape(len(chunks), dim).copy()
    return NewDocument(Document(**json.loads(row["document"])), row["digest"], chunks, vectors)

