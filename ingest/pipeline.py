"""Files in, indexed passages out: discover, hash, skip, parse, chunk, embed, write.

Incremental by content hash: an unchanged document costs a hash and a lookup, a changed one is
replaced, and a document that vanished from a re-ingested folder or file is deleted. Documents are
written in batches of about `batch_chunks` chunks; each batch becomes searchable (dense and BM25)
as soon as it is written, in one step. Two documents with the same source in one run: the last
wins and the source is reported under `duplicates`.
"""

from __future__ import annotations

import dataclasses
import errno
import glob
import hashlib
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from indexes.encoder import Encoder
from indexes.errors import RagError
from indexes.store import Collection, NewDocument
from indexes.types import Document
from indexes.writer import last_wins
from ingest.chunking import SentenceWindowChunker
from ingest.loaders import SINGLE_DOCUMENT as _SINGLE_DOCUMENT
from ingest.loaders import InputLimits, is_supported, parse, suffix_of
from ingest.progress import progress_bar
from ingest.sources import ingest_label, labelled

log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    files_seen: int = 0
    files_unchanged: int = 0
    documents_added: int = 0
    documents_replaced: int = 0
    documents_unchanged: int = 0
    documents_deleted: int = 0
    chunks_added: int = 0
    duplicates: list[str] = field(default_factory=list)
    seconds: float = 0.0
    embed_seconds: float = 0.0
    errors: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def document_hash(doc: Document) -> str:
    payload = json.dumps([doc.title, doc.text, doc.metadata], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def discover(paths: Iterable[str]) -> tuple[list[Path], list[Path], list[dict[str, str]]]:
    """Expand files, folders (recursively) and globs into supported files.

    Returns (files, folders that were walked, errors for explicit paths that cannot be used).
    """
    files: dict[Path, None] = {}
    folders: list[Path] = []
    errors: list[dict[str, str]] = []
    for raw in paths:
        expanded = [Path(p) for p in sorted(glob.glob(os.path.expanduser(raw), recursive=True))] if glob.has_magic(raw) else [Path(raw).expanduser()]
        if not expanded:
            errors.append({"source": raw, "error": f"{raw}: no file matches"})
        for path in expanded:
            if path.is_dir():
                folders.append(path.resolve())
                for found in sorted(path.rglob("*")):
                    if found.is_file() and is_supported(found.name) and not any(
                        part.startswith(".") for part in found.relative_to(path).parts
                    ):
                        files[found.resolve()] = None
            elif path.is_file():
                if is_supported(path.name):
                    files[path.resolve()] = None
                else:
                    errors.append({"source": str(path), "error": f"{path}: unsupported file type"})
            elif not glob.has_magic(raw):
                errors.append({"source": str(path), "error": f"{path}: {_why_missing(path)}"})
    return list(files), folders, errors


def _why_missing(path: Path) -> str:
    """Why a named path is neither a file nor a folder: a symbolic link loop, a link to nothing, or
    nothing there."""
    if path.is_symlink():
        try:
            path.resolve(strict=True)
        except RuntimeError:  # Python < 3.13 reports a loop so
            return "a symbolic link loop"
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return "a symbolic link loop"
            return "a symbolic link to nothing (no such file or folder)"
    return "no such file or folder"


@dataclass
class FileScan:
    """What one file brings to a run: its changed documents (labelled, with their hashes), the
    sources it accounts for (for pruning), how many of its documents are unchanged, the sources
    it repeats, and its problems: why it failed, or which of its records were skipped."""

    source: str
    changed: list[tuple[Document, str]] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)
    unchanged: int = 0
    file_unchanged: bool = False
    duplicates: list[str] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)

    def tally(self, seen: set[str], report: IngestReport) -> None:
        seen.update(self.seen)
        report.documents_unchanged += self.unchanged
        report.files_unchanged += int(self.file_unchanged)
        report.duplicates.extend(s for s in self.duplicates if s not in report.duplicates)
        report.errors.extend(self.errors)


def scan_file(
    path: Path, known: Mapping[str, tuple[int, str]], limits: InputLimits, label: str, metadata: Mapping[str, Any] | None = None
) -> FileScan:
    """Read, hash and parse one file, keeping only documents whose hash differs from `known`;
    `label` is the file's source label (`ingest.sources`); `metadata` (`rag ingest --metadata`) is
    added to each of its documents' own and is part of their hash, so changing it re-ingests them.

    Pure (reads the file, writes nothing), so a distributed run calls it on any worker with the
    slice of `known` that belongs to the file."""
    source = str(path)
    scan = FileScan(source)
    single = suffix_of(path.name) in _SINGLE_DOCUMENT
    try:
        limits.check_size(path.stat().st_size, source)
        data = path.read_bytes()
        if single:
            digest = "file:" + hashlib.sha256(data).hexdigest()
            if metadata:
                digest += ":" + hashlib.sha256(json.dumps(metadata, sort_keys=True, default=str).encode()).hexdigest()[:16]
            scan.seen.append(source)
            if known.get(source, (0, ""))[1] == digest:
                scan.unchanged = 1
                scan.file_unchanged = True
                return scan
        parsed = parse(data, source, limits)
        docs = parsed.documents
        if metadata:
            docs = [dataclasses.replace(d, metadata={**d.metadata, **metadata}) for d in docs]
    except (OSError, RagError) as exc:  # LoadError is a RagError
        message = f"{path}: {exc.strerror or exc}" if isinstance(exc, OSError) else str(exc)
        scan.errors.append({"source": source, "error": message})
        log.info("%s", message)  # reported once, by the caller, from report.errors
        # A file that cannot be read now keeps what was stored from it before.
        scan.seen = [s for s in known if s == source or s.startswith(source + "#")]
        return scan
    problem = parsed.problem(source)
    if problem:
        # Skipped records are reported; what the file stored before is kept, not pruned.
        scan.errors.append({"source": source, "error": problem})
        scan.seen.extend(s for s in known if s.startswith(source + "#"))
    if single:
        scan.changed.append((labelled(docs[0], source, label), digest))
        return scan
    unique, repeated = last_wins(docs, lambda d: d.source)
    scan.duplicates = sorted(repeated)
    for doc in unique:
        digest = document_hash(doc)
        if known.get(doc.source, (0, ""))[1] == digest:
            scan.unchanged += 1
        else:
            scan.changed.append((labelled(doc, source, label), digest))
    scan.seen.extend(dict.fromkeys(d.source for d in docs))
    scan.file_unchanged = scan.unchanged == len(docs)
    return scan


class Ingestor:
    """Writes documents into one collection with one encoder and one chunker."""

    def __init__(
        self,
        collection: Collection,
        encoder: Encoder,
        chunker: SentenceWindowChunker,
        *,
        limits: InputLimits = InputLimits(),
        batch_chunks: int = 2048,
        show_progress: bool = False,
    ) -> None:
        collection.require_encoder(encoder.spec)
        self.collection = collection
        self.encoder = encoder
        self.chunker = chunker
        self.limits = limits
        self.batch_chunks = batch_chunks
        self.show_progress = show_progress
        self.metadata: dict[str, Any] = {}  # added to every file's documents (`rag ingest --metadata`)

    # -- entry points ------------------------------------------------------------------------
    def ingest_paths(self, paths: Iterable[str], prune: bool = True) -> IngestReport:
        """Ingest files, folders and globs; with `prune`, documents of walked folders whose files
        are gone are deleted."""
        started = time.perf_counter()
        report = IngestReport()
        files, folders, errors = discover(paths)
        report.errors.extend(errors)
        report.files_seen = len(files)
        with self._recorded_run(report, started):
            known: dict[str, tuple[int, str]] = {}
            for folder in folders:
                known.update(self.collection.known_documents(prefix=str(folder) + os.sep))
            known.update(self.collection.known_documents(sources=[str(f) for f in files]))
            for f in files:
                if suffix_of(f.name) not in _SINGLE_DOCUMENT:
                    known.update(self.collection.known_documents(prefix=f"{f}#"))
            seen: set[str] = set()
            self._ingest_files(files, known, seen, report, folders)
            if prune:
                stale = self._stale(known, seen, folders, files)
                if stale:
                    report.documents_deleted += self.collection.delete(stale)["deleted"]
        return report

    def ingest_documents(self, documents: Iterable[Document]) -> IngestReport:
        """Ingest documents built in memory (API JSON, uploads); sources are theirs to choose."""
        started = time.perf_counter()
        report = IngestReport()
        given = list(documents)
        docs, repeated = last_wins(given, lambda d: d.source)
        report.duplicates.extend(repeated)
        with self._recorded_run(report, started):
            known = self.collection.known_documents(sources=[d.source for d in docs])
            self._write_all(self._changed(docs, known, report), report)
        return report

    @contextmanager
    def _recorded_run(self, report: IngestReport, started: float) -> Iterator[None]:
        """Hold the write lock and record the run (counts, errors, seconds), even when it fails.

        The run starts once the lock is held, so a run left `running` is one whose process died;
        the next writer marks it interrupted."""
        with self.collection.writer():
            run_id = self.collection.start_run()
            status = "failed"
            try:
                yield
                status = "completed" if not report.errors else "completed_with_errors"
            except KeyboardInterrupt:  # Ctrl-C: what was published is kept, like a crash
                status = "interrupted"
                raise
            finally:
                report.seconds = time.perf_counter() - started
                self.collection.finish_run(run_id, status, _run_stats(report), report.errors)

    def ingest_upload(self, name: str, data: bytes, source: str) -> IngestReport:
        """Parse an uploaded file from its bytes alone; `source` names it in the collection."""
        parsed = parse(data, name, self.limits)
        docs = parsed.documents
        renamed = [
            Document(
                source=source + doc.source[len(name):],
                text=doc.text,
                title=doc.title,
                metadata=doc.metadata,
                external_id=doc.external_id,
            )
            for doc in docs
        ]
        report = self.ingest_documents(renamed)
        problem = parsed.problem(name)
        if problem:
            report.errors.append({"source": source, "error": problem})
        return report

    # -- stages ------------------------------------------------------------------------------
    def _ingest_files(
        self,
        files: list[Path],
        known: dict[str, tuple[int, str]],
        seen: set[str],
        report: IngestReport,
        folders: list[Path],
    ) -> None:
        """Parse, chunk, embed and write the changed documents of `files` (overridden to distribute)."""
        self._write_all(self._from_files(files, known, seen, report, folders), report)

    def _from_files(
        self,
        files: list[Path],
        known: dict[str, tuple[int, str]],
        seen: set[str],
        report: IngestReport,
        folders: list[Path],
    ) -> Iterator[tuple[Document, str]]:
        bar = progress_bar(total=len(files), unit="file", desc="files", enabled=self.show_progress)
        for path in files:
            bar.update(1)
            scan = scan_file(path, known, self.limits, ingest_label(path, folders), self.metadata)
            scan.tally(seen, report)
            yield from scan.changed
        bar.close()

    def _changed(
        self, docs: Iterable[Document], known: dict[str, tuple[int, str]], report: IngestReport
    ) -> Iterator[tuple[Document, str]]:
        for doc in docs:
            digest = document_hash(doc)
            if known.get(doc.source, (0, ""))[1] == digest:
                report.documents_unchanged += 1
                continue
            yield doc, digest

    def _write_all(self, items: Iterable[tuple[Document, str]], report: IngestReport) -> None:
        """Embed and write batches while one producer thread reads, parses and chunks the next
        (a queue of two batches bounds memory), so the encoder does not wait for parsing."""
        batches: queue.Queue[list[tuple[Document, str, list[Any]]] | BaseException | None] = queue.Queue(maxsize=2)
        stop = threading.Event()

        def put(item: list[tuple[Document, str, list[Any]]] | BaseException | None) -> bool:
            while not stop.is_set():
                try:
                    batches.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                for batch in self._batches(items, report):
                    if not put(batch):
                        return
            except BaseException as exc:  # handed to the consumer, raised there
                put(exc)
            else:
                put(None)

        producer = threading.Thread(target=produce, name="ingest-chunking", daemon=True)
        producer.start()
        try:
            while (batch := batches.get()) is not None:
                if isinstance(batch, BaseException):
                    raise batch
                self._flush(batch, report)
        finally:
            stop.set()  # a failed write: the producer stops at its next batch
            producer.join()

    def _batches(
        self, items: Iterable[tuple[Document, str]], report: IngestReport
    ) -> Iterator[list[tuple[Document, str, list[Any]]]]:
        """Changed documents with their chunks, in batches of about `batch_chunks` chunks."""
        pending: list[tuple[Document, str, list[Any]]] = []
        size = 0
        for doc, digest in items:
            chunks = self.chunker.split(doc.text)
            if not chunks:
                report.errors.append({"source": doc.source, "error": f"{doc.source}: no text to index"})
                continue
            pending.append((doc, digest, chunks))
            size += len(chunks)
            if size >= self.batch_chunks:
                yield pending
                pending, size = [], 0
        if pending:
            yield pending

    def _flush(self, pending: list[tuple[Document, str, list[Any]]], report: IngestReport) -> None:
        texts = [self.collection.embedding_text(doc.title, c.text) for doc, _, chunks in pending for c in chunks]
        started = time.perf_counter()
        bar = progress_bar(total=len(texts), unit="passage", desc="embedding", enabled=self.show_progress)
        vectors = self.encoder.encode(texts, kind="passage", progress=bar)
        bar.close()
        report.embed_seconds += time.perf_counter() - started
        batch = []
        offset = 0
        for doc, digest, chunks in pending:
            batch.append(NewDocument(doc, digest, chunks, vectors[offset : offset + len(chunks)]))
            offset += len(chunks)
        self._write_batch(batch, report)

    def _write_batch(self, batch: list[NewDocument], report: IngestReport) -> None:
        """The one call into the store: a batch of embedded documents, written crash-safely."""
        result = self.collection.write(batch)
        report.documents_added += result["added"]
        report.documents_replaced += result["replaced"]
        report.chunks_added += result["chunks"]
        report.duplicates.extend(s for s in result.get("duplicates", []) if s not in report.duplicates)

    @staticmethod
    def _stale(
        known: dict[str, tuple[int, str]], seen: set[str], folders: list[Path], files: list[Path]
    ) -> list[int]:
        """Known documents under a walked folder, or inside a re-read multi-document file, that
        this run did not see."""
        roots = [str(folder) + os.sep for folder in folders]
        multi = {str(f) + "#" for f in files if suffix_of(f.name) not in _SINGLE_DOCUMENT}
        stale = []
        for source, (doc_id, _) in known.items():
            if source in seen:
                continue
            inside_folder = any(source.startswith(root) for root in roots)
            inside_file = "#" in source and source[: source.index("#") + 1] in multi
            if inside_folder or inside_file:
                stale.append(doc_id)
        return stale


def _run_stats(report: IngestReport) -> dict[str, Any]:
    stats = report.to_dict()
    stats.pop("errors")
    return stats
