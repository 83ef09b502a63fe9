"""One typed settings object, read from `RAG_*` variables, a `rag.toml` file and CLI flags.

Precedence, highest first: CLI flags (passed as overrides), environment, `rag.toml` (or the file
named by `RAG_CONFIG`), defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from indexes.encoder import DEFAULT_EMBEDDER
from ingest.loaders import InputLimits
from rag.reader import DEFAULT_NULL_THRESHOLD, DEFAULT_READER, DEFAULT_RETRIEVAL_WEIGHT, DEFAULT_SPAN_THRESHOLD
from rag.shipped import VERIFIER as SHIPPED_VERIFIER


def _default_home() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("rag", appauthor=False))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAG_", extra="ignore", validate_default=True)

    home: Path = Field(default_factory=_default_home, description="data home: SQLite file, FAISS indexes, locks")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default sqlite:///HOME/rag.db")
    graph_cache: Path | None = Field(
        None, description="exported ONNX/OpenVINO encoder graphs (fingerprinted by model files, so data homes may share one); default HOME/models"
    )
    collection: str = Field("default", description="collection used when a command names none")

    embedding_model: str = Field(DEFAULT_EMBEDDER, description="HF id or local folder of the encoder")
    pooling: Literal["mean", "cls", "max"] | None = Field(None, description="default: from the model's config, else mean")
    normalize: bool | None = Field(None, description="default: from the model's config, else off (Contriever)")
    max_tokens: int | None = Field(None, ge=8, le=8192)
    query_prefix: str = ""
    passage_prefix: str = ""
    quantize: bool | None = Field(
        None,
        description=(
            "int8 encoder (CPU; torch and onnx runtimes; onnx: static int8, a vector does not depend "
            "on its batch); unset: no int8 (onnx int8 costs 0.007 dense nDCG@10 on the whole SciFact corpus)"
        ),
    )
    threads: int | None = Field(None, ge=1, description="torch threads; default: all cores")
    encoder_threads: int | None = Field(
        None, ge=1, description="threads of each encoder call; default: RAG_THREADS (rag serve on a CPU without bf16: cores / batch workers)"
    )
    device: str = Field("auto", description="auto (CUDA when torch sees one, else CPU), cpu, cuda, cuda:N")
    precision: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto",
        description=(
            "dtype of encoder, reader and reranker; auto: float16/bfloat16 on CUDA, float32 on CPU, except the "
            "openvino encoder, where auto is OpenVINO's choice (bf16 on CPUs with native bf16)"
        ),
    )
    encoder_runtime: Literal["auto", "torch", "onnx", "openvino"] = Field(
        "auto",
        description=(
            "what runs the encoder: auto (on the CPU: openvino bf16 where the CPU computes bf16 natively, else onnx "
            "fp32 when installed, else torch; torch on a GPU), torch (the reference, any device), onnx or openvino (CPU)"
        ),
    )

    chunk_tokens: int = Field(200, ge=8, le=8192)
    chunk_overlap: int = Field(32, ge=0)
    title_in_embedding: bool = True
    index_factory: str = Field("Flat", description="FAISS factory string: Flat, HNSW32, IVF1024,PQ48 ...")
    mmap: bool = Field(True, description="memory-map FAISS indexes for search where FAISS allows")
    batch_chunks: int = Field(2048, ge=1, description="chunks per write batch (one new index segment each)")
    nprobe: int | None = Field(None, ge=1, le=65536, description="IVF lists searched per query; default: the collection's, else tuned per segment")
    ef_search: int | None = Field(None, ge=1, le=65536, description="HNSW candidate list per query; default: the collection's, else 64 (128 from 1M vectors)")
    # Distributed ingestion (`rag ingest --ray`, API jobs when set): Ray Data on an existing cluster.
    ray_address: str | None = Field(None, description="Ray cluster for ingestion: 'auto', 'local' or HOST:PORT; unset: in-process")
    ray_embed_actors: int = Field(1, ge=1, description="embedding actors (each loads the encoder once)")
    ray_batch_size: int = Field(32, ge=1, description="documents per embedding call on an actor")
    ray_cpus_per_actor: float = Field(
        1.5,
        gt=0,
        description="CPUs each embedding actor reserves; it runs that many encoder threads, rounded up (1.5 leaves the chunking stage 0.5 of a 2-CPU node)",
    )
    ray_gpus_per_actor: float = Field(0.0, ge=0, description="GPU share per embedding actor; > 0 embeds on cuda")

    # Retrieval: which retriever answers, how hybrid fuses, and optional reranking and diversity.
    retriever: Literal["dense", "bm25", "hybrid"] = Field("hybrid", description="dense (FAISS), bm25 (keyword) or both fused")
    fusion: Literal["rrf", "convex"] = Field("convex", description="hybrid fusion: reciprocal rank fusion or convex combination")
    rrf_k: float = Field(60.0, ge=0, description="RRF constant: score = sum 1 / (rrf_k + rank)")
    hybrid_weight: float = Field(0.5, ge=0, le=1, description="dense share of the fused score (convex; weighted RRF)")
    normalization: Literal["minmax", "zscore"] = Field("zscore", description="score normalisation before a convex fusion")
    candidate_depth: int = Field(100, ge=1, description="candidates taken from each side before fusion")
    reranker_model: str | None = Field(None, description="cross-encoder (HF id or folder) reranking the top candidates")
    rerank_depth: int = Field(50, ge=1, description="candidates reranked (cross-encoder) or diversified (MMR)")
    mmr_lambda: float | None = Field(None, ge=0, le=1, description="MMR relevance/diversity trade-off; unset: no MMR")

    max_query_chars: int = Field(2000, ge=1)
    max_file_mb: float = Field(50.0, gt=0, description="largest input file, in MiB, as stored or uploaded")
    # What one input may expand to once parsed (ingest.loaders.InputLimits); checked while streaming.
    max_expanded_mb: float = Field(256.0, gt=0, description="bytes a compressed file (.gz, .docx) may decompress to, in MiB")
    max_records: int = Field(1_000_000, ge=1, description="documents (JSONL lines, SQuAD paragraphs) per file")
    max_document_chars: int = Field(20_000_000, ge=1, description="characters per document")
    max_json_depth: int = Field(32, ge=1, description="nesting depth of a record's metadata")
    max_k: int = Field(1000, ge=1)

    # Answering (`rag ask`, `/v1/ask`): generation and the citation check.
    answer_mode: Literal["extractive", "generative"] = Field("extractive", description="default of `rag ask --mode`")
    answer_k: int = Field(5, ge=1, le=50, description="passages read per question")
    generator_backend: Literal["llamacpp", "transformers", "openai"] = "llamacpp"
    generator_model: str | None = Field(
        None, description="GGUF file (llamacpp), HF folder/id or GGUF (transformers), model name (openai); default SmolLM2-135M-Instruct"
    )
    generator_max_tokens: int = Field(256, ge=1, le=32768)
    generator_temperature: float = Field(0.0, ge=0.0, le=2.0, description="0 = greedy, deterministic")
    generator_timeout_s: float = Field(120.0, gt=0)
    generator_context_tokens: int = Field(4096, ge=256, description="llama.cpp context window per request")
    generator_q8_0: bool = Field(
        True, description="run the packaged Q4_1 SmolLM2 from a Q8_0 copy written once (llama.cpp's CPU kernels: x1.6 prompt speed on AVX2)"
    )
    openai_base_url: str = Field("http://127.0.0.1:8080/v1", description="OpenAI-compatible server for generator_backend=openai")
    openai_api_key: str | None = None
    support_threshold: float = Field(
        0.7, ge=0.0, le=1.0, description="lexical verifier: support score (content-word recall) that verifies a sentence"
    )
    verifier: Literal["auto", "lexical", "reader", "nli"] = Field(
        "auto",
        description="citation check: auto (the support judge when RAG_VERIFIER_MODEL is set and loads, else the reader when "
        "RAG_READER_MODEL is, else lexical), lexical (no model), reader (the extractive reader) or nli (the support judge: "
        "a cross-encoder, RAG_VERIFIER_MODEL, at its calibrated threshold)",
    )
    verifier_model: str | None = Field(
        SHIPPED_VERIFIER,
        description="the support judge: the shipped verifier-minilm-l6-support-v2, an exported folder, or an HF id or folder of a "
        "(claim, passage) -> supported sequence classifier",
    )
    verifier_threshold: float | None = Field(
        None, ge=0.0, le=1.0, description="support judge: probability of 'supported' that verifies; default: the calibration file's"
    )
    verifier_guards: str | None = Field(
        None, description="support judge: rule guards applied (comma-separated: names, negation, number, qualifier, name order; "
        "or none); default: those the calibration file keeps"
    )
    verifier_calibration: Path | None = Field(
        None, description="support judge calibration (JSON: model, threshold, guards); default: the one shipped in rag/verifiers"
    )
    reader_guided: bool = Field(
        True, description="generative answers: give the generator the reader's answer spans, and fall back to the reader's span "
        "(marked) when the model's sentence fails the check"
    )

    # API (`rag serve`): where it listens, who may call it, and how much one caller may ask for.
    api_host: str = Field("127.0.0.1", description="interface `rag serve` binds to")
    api_port: int = Field(8000, ge=1, le=65535)
    auth: bool = Field(True, description="require API keys; off only for local development on loopback")
    max_body_mb: float = Field(100.0, gt=0, description="largest request body the API reads")
    max_upload_files: int = Field(20, ge=1, description="files per upload request")
    max_json_documents: int = Field(1000, ge=1, description="documents per JSON ingestion request")
    rate_limit_per_minute: int = Field(600, ge=0, description="requests per key per minute; 0 disables")
    generation_timeout_s: float = Field(60.0, gt=0, description="longest an answer may take before 504")
    job_workers: int = Field(2, ge=1, description="threads running ingestion jobs")
    search_batch_max: int = Field(
        32,
        ge=0,
        description=(
            "API: up to this many searches arriving together share one batched retrieval "
            "(x1.7-1.9 searches/s at 16 clients on a quiet 2-core machine); 0: off"
        ),
    )
    search_batch_wait_ms: float = Field(2.0, ge=0, le=1000, description="longest a search waits for others to batch with")

    # Extractive reader (`rag ask --mode extractive`, `rag eval reader`): any question-answering model.
    reader_model: str = Field(
        DEFAULT_READER,
        description="the shipped reader-minilm-l6-squad-na (ONNX, int8 weights), a folder exported by scripts/export_models.py, "
        "or an HF id or folder of an AutoModelForQuestionAnswering",
    )
    reader_runtime: Literal["auto", "onnx", "torch"] = Field(
        "auto",
        description="what runs the reader and the nli verifier: auto (ONNX Runtime for exported folders on the CPU, else torch), "
        "onnx, or torch (HF folders and hub ids; GPUs)",
    )
    reader_max_answer_tokens: int = Field(15, ge=1, le=512, description="longest answer span, in tokens")
    reader_abstention: Literal["null", "span", "off"] = Field(
        "null",
        description="when the reader says 'not in the sources': null (no-answer head, SQuAD 2.0 readers), "
        "span (span-logit threshold, readers without one) or off (choose as null does, always answer)",
    )
    reader_null_threshold: float = Field(
        DEFAULT_NULL_THRESHOLD,
        description="abstention=null: answer only when the chosen passage's margin (span start+end logit minus the "
        "no-answer logit) plus reader_retrieval_weight x its standardised retrieval score exceeds this",
    )
    reader_span_threshold: float = Field(
        DEFAULT_SPAN_THRESHOLD, description="abstention=span: a span is an answer when its start+end logit reaches this"
    )
    reader_retrieval_weight: float = Field(
        DEFAULT_RETRIEVAL_WEIGHT,
        ge=0,
        description="logits added per standard deviation of retrieval score when choosing between passages' answers "
        "(and in the abstention value); 0: reader alone",
    )
    reader_batch_tokens: int = Field(16384, ge=512, description="tokens (windows x padded length) per reader forward pass")

    @field_validator("home", mode="before")
    @classmethod
    def _expand(cls, value: Any) -> Any:
        return Path(value).expanduser() if isinstance(value, (str, Path)) else value

    @property
    def sql_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'rag.db'}"

    @property
    def encoder_call_threads(self) -> int | None:
        """Threads of each encoder call: RAG_ENCODER_THREADS, else RAG_THREADS (None: all cores)."""
        return self.encoder_threads or self.threads

    @property
    def graph_dir(self) -> Path:
        return self.graph_cache or self.home / "models"

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)

    @property
    def input_limits(self) -> InputLimits:
        return InputLimits(
            max_file_bytes=self.max_file_bytes,
            max_expanded_bytes=int(self.max_expanded_mb * 1024 * 1024),
            max_records=self.max_records,
            max_document_chars=self.max_document_chars,
            max_json_depth=self.max_json_depth,
        )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = Path(os.environ.get("RAG_CONFIG", "rag.toml"))
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=toml_file))


def load_settings(**overrides: Any) -> Settings:
    """Settings with CLI overrides applied; `None` means 'not given on the command line'.
    A config file that cannot be read or parsed is an InvalidConfig naming it (CLI exit 2)."""
    import tomllib

    from indexes.errors import InvalidConfig

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except tomllib.TOMLDecodeError as exc:
        raise InvalidConfig(f"config file {os.environ.get('RAG_CONFIG', 'rag.toml')}: not valid TOML ({exc})") from None
    except OSError as exc:
        raise InvalidConfig(f"config file {os.environ.get('RAG_CONFIG', 'rag.toml')}: {exc.strerror or exc}") from None
