"""Builds the components once from `Settings` and shares them (CLI command or API process).

Heavy imports (torch, transformers, FAISS) happen here on first use, never at `rag --help`.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from indexes.encoder import Encoder, EncoderSpec, choose_runtime, encoder_dtype, load_encoder, set_threads, torch_precision
from indexes.errors import CollectionNotFound, InvalidInput
from indexes.store import Collection, CollectionConfig, SearchParams, Store
from ingest.chunking import SentenceWindowChunker
from ingest.pipeline import Ingestor
from rag.retrieval import Retriever, build_retriever
from rag.settings import Settings

if TYPE_CHECKING:
    from rag.generation import Generator
    from rag.qa import AskPipeline
    from rag.reader import ExtractiveReader
    from rag.rerank import CrossEncoderReranker

log = logging.getLogger(__name__)

class EncoderCache:
    """Loaded encoders by what makes them differ (model, runtime, device, dtype, ...), each loaded
    once: loading costs seconds and the weights are read-only after it. A Runtime owns one; two
    threads (API requests) asking for the same encoder wait for one load instead of doing two."""

    def __init__(self) -> None:
        self._loaded: dict[tuple[object, ...], Encoder] = {}
        self._lock = threading.Lock()
        self._loading: dict[tuple[object, ...], threading.Lock] = {}

    def get(self, key: tuple[object, ...], load: Callable[[], Encoder]) -> Encoder:
        with self._lock:
            if key in self._loaded:
                return self._loaded[key]
            per_key = self._loading.setdefault(key, threading.Lock())
        with per_key:  # one load per key; other keys load meanwhile
            with self._lock:
                if key in self._loaded:
                    return self._loaded[key]
            encoder = load()
            with self._lock:
                self._loaded[key] = encoder
                self._loading.pop(key, None)
            return encoder


def resolve_device(requested: str, cuda_available: bool) -> str:
    """`auto` is CUDA when torch sees a GPU, else the CPU; an explicit device must exist."""
    requested = requested.strip().lower()
    if requested == "auto":
        return "cuda" if cuda_available else "cpu"
    if requested == "cpu":
        return "cpu"
    if requested == "cuda" or requested.startswith("cuda:"):
        if not cuda_available:
            raise InvalidInput(f"RAG_DEVICE={requested} but torch sees no CUDA device; use auto or cpu")
        return requested
    raise InvalidInput(f"unknown device {requested!r}; use auto, cpu, cuda or cuda:N")


def gpu_driver_loaded() -> bool:
    """False only where we know no GPU can be seen: Linux without NVIDIA's or ROCm's driver."""
    return not sys.platform.startswith("linux") or any(Path(p).exists() for p in ("/proc/driver/nvidia/version", "/dev/kfd"))


def _cuda_available() -> bool:
    """Asks torch only where a GPU driver is loaded: importing torch costs ~2 s of every command,
    and on Linux torch cannot see a GPU whose driver is absent."""
    if not gpu_driver_loaded():
        return False
    import torch

    return bool(torch.cuda.is_available())


class Runtime:
    def __init__(self, settings: Settings, encoders: EncoderCache | None = None) -> None:
        self.settings = settings
        self.encoders = encoders if encoders is not None else EncoderCache()
        self._reranker: CrossEncoderReranker | None = None
        self._reader: ExtractiveReader | None = None
        self._generator: Generator | None = None
        # One lock per model kind, held while it loads: two first requests at once wait for one load
        # (seconds, and the model's memory twice otherwise); loading the reader does not hold up the reranker.
        self._reranker_lock = threading.Lock()
        self._reader_lock = threading.Lock()
        self._generator_lock = threading.Lock()

    @cached_property
    def device(self) -> str:
        """The torch device every model runs on (RAG_DEVICE, `auto` resolved once)."""
        requested = self.settings.device.strip().lower()
        return resolve_device(requested, _cuda_available() if requested != "cpu" else False)

    @cached_property
    def precision(self) -> str:
        """The torch dtype of the encoder, reader and reranker on `device`."""
        return torch_precision(self.settings.precision, self.device)

    def _to_precision(self, model: object) -> None:
        """Cast a loaded torch model (reader, reranker) to `precision` on a GPU."""
        if self.precision != "float32":
            import torch

            model.to(getattr(torch, self.precision))  # type: ignore[attr-defined]

    @cached_property
    def store(self) -> Store:
        return Store(self.settings.home, self.settings.sql_url, mmap=self.settings.mmap)

    def requested_spec(self) -> EncoderSpec:
        s = self.settings
        return EncoderSpec.detect(
            s.embedding_model,
            pooling=s.pooling,
            normalize=s.normalize,
            max_tokens=s.max_tokens,
            query_prefix=s.query_prefix,
            passage_prefix=s.passage_prefix,
        )

    def encoder(self, spec: EncoderSpec) -> Encoder:
        s = self.settings
        runtime, quantize = choose_runtime(s.encoder_runtime, self.device, s.quantize)
        dtype = encoder_dtype(runtime, s.precision, self.device)
        threads = s.encoder_call_threads
        key = spec.identity() + (spec.max_tokens, runtime, self.device, dtype, quantize, threads)


        def load() -> Encoder:
            if s.encoder_runtime == "auto" and runtime == "torch" and self.device == "cpu":
                log.warning("neither openvino nor onnxruntime is installed: encoding with torch; pip install 'rag[speed]' to embed 1.7-3.9x faster")
            return load_encoder(
                spec,
                runtime,
                device=self.device,
                dtype=dtype,
                quantize=quantize,
                threads=threads,
                cache_dir=s.graph_dir,
            )

        return self.encoders.get(key, load)

    def collection(self, name: str | None = None) -> Collection:
        return self.store.collection(name or self.settings.collection)

    def _model_was_chosen(self) -> bool:
        chosen = {"embedding_model", "pooling", "normalize", "query_prefix", "passage_prefix"}
        return bool(chosen & self.settings.model_fields_set)

    def encoder_for(self, collection: Collection) -> Encoder:
        """The encoder that built `collection`; an explicitly chosen different one is refused."""
        if self._model_was_chosen():
            collection.require_encoder(self.requested_spec())
        return self.encoder(collection.config.encoder)

    def writable_collection(self, name: str | None = None) -> Collection:
        """Open a collection for ingestion, creating it from the settings if it does not exist."""
        name = name or self.settings.collection
        try:
            found = self.store.collection(name)
        except CollectionNotFound:
            spec = self.requested_spec()
            encoder = self.encoder(spec)
            config = CollectionConfig(
                encoder=encoder.spec,
                dim=encoder.dim,
                index_factory=self.settings.index_factory,
                chunk_tokens=min(self.settings.chunk_tokens, encoder.max_tokens - 2),
                chunk_overlap=self.settings.chunk_overlap,
                title_in_embedding=self.settings.title_in_embedding,
                search=SearchParams(nprobe=self.settings.nprobe, ef_search=self.settings.ef_search),
            )
            return self.store.create_collection(name, config)  # validates the config first
        self.encoder_for(found)
        return found

    def ingestor(self, collection: Collection, show_progress: bool = False) -> Ingestor:
        encoder = self.encoder_for(collection)
        chunker = SentenceWindowChunker(
            encoder.tokenizer, collection.config.chunk_tokens, collection.config.chunk_overlap
        )
        s = self.settings
        if s.ray_address:
            from ingest.distributed import DistributedIngestor, RayOptions

            ray = RayOptions(
                address=s.ray_address,
                embed_actors=s.ray_embed_actors,
                batch_size=s.ray_batch_size,
                cpus_per_actor=s.ray_cpus_per_actor,
                gpus_per_actor=s.ray_gpus_per_actor,
                threads=s.threads,
            )
            return DistributedIngestor(
                collection,
                encoder,
                chunker,
                limits=s.input_limits,
                batch_chunks=s.batch_chunks,
                show_progress=show_progress,
                ray=ray,
                encoder_runtime=s.encoder_runtime,
                quantize=s.quantize,
                precision=s.precision,
                cache_dir=s.graph_dir,
            )
        return Ingestor(
            collection,
            encoder,
            chunker,
            limits=self.settings.input_limits,
            batch_chunks=self.settings.batch_chunks,
            show_progress=show_progress,
        )

    def retriever(self, name: str | None = None, kind: str | None = None, params: SearchParams | None = None) -> Retriever:
        """The configured retriever (`kind` overrides RAG_RETRIEVER: dense, bm25 or hybrid) over a
        collection, with the reranker and MMR when the settings ask for them; `params` (one
        request's nprobe / efSearch) override RAG_NPROBE / RAG_EF_SEARCH where set."""
        collection = self.collection(name)
        kind = kind or self.settings.retriever
        needs_encoder = kind != "bm25" or self.settings.mmr_lambda is not None
        encoder = self.encoder_for(collection) if needs_encoder else None
        return build_retriever(collection, encoder, self.settings, kind, reranker=self.reranker(), params=params)

    def reranker(self) -> CrossEncoderReranker | None:
        """The cross-encoder named by RAG_RERANKER_MODEL, loaded once; None when unset."""
        model = self.settings.reranker_model
        if not model:
            return None
        with self._reranker_lock:
            if self._reranker is None:
                from rag.rerank import CrossEncoderReranker

                set_threads(self.settings.threads)
                reranker = CrossEncoderReranker(model, device=self.device)
                self._to_precision(reranker.model)
                self._reranker = reranker
            return self._reranker

    def reader(self) -> ExtractiveReader:
        """The extractive reader the settings name, loaded on first use and then shared."""
        with self._reader_lock:
            if self._reader is None:
                from rag.heads import torch_module
                from rag.reader import ExtractiveReader

                s = self.settings
                reader = ExtractiveReader(
                    s.reader_model,
                    device=self.device,
                    max_answer_tokens=s.reader_max_answer_tokens,
                    null_threshold=s.reader_null_threshold,
                    abstention=s.reader_abstention,
                    span_threshold=s.reader_span_threshold,
                    batch_tokens=s.reader_batch_tokens,
                    retrieval_weight=s.reader_retrieval_weight,
                    runtime=s.reader_runtime,
                    threads=s.threads,
                )
                module = torch_module(reader.model)
                if module is not None:
                    self._to_precision(module)
                self._reader = reader
            return self._reader

    def generator(self) -> Generator:
        """The configured generator, built once per Runtime (one llama.cpp model per process)."""
        with self._generator_lock:
            if self._generator is None:
                from rag.generation import build_generator

                # the generator gets the resolved device (RAG_DEVICE=auto is not a torch device)
                self._generator = build_generator(self.settings.model_copy(update={"device": self.device}))
            return self._generator

    def ask_pipeline(self) -> AskPipeline:
        """Retrieval, the reader and the generator behind `rag ask` and `/v1/ask`, each loaded on first use."""
        from rag.qa import AskPipeline
        from rag.verifiers import build_verifier

        s = self.settings
        return AskPipeline(
            lambda name, kind: self.retriever(name, kind),
            reader=self.reader,
            generator=self.generator,
            default_mode=s.answer_mode,
            default_k=s.answer_k,
            support_threshold=s.support_threshold,
            verifier=lambda: build_verifier(s, self.reader, self.device),
            # extractive by default only: a mode the user chose is never swapped for another
            fallback_to_generative="answer_mode" not in s.model_fields_set,
            # guided by default: the default reader is the shipped one (no download); a reader that
            # cannot load leaves generation unguided, with a note (AskPipeline._guide)
            reader_guided=s.reader_guided,
        )
