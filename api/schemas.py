"""Request and response models of the HTTP API, with OpenAPI examples.

Responses mirror the library's `to_dict` shapes (`Passage.to_dict`, `Answer.to_dict`), which stay
the one definition: these models describe them and allow extra keys, so a field added there flows
through here without a second edit.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


def _json_integer(value: Any) -> Any:
    """An integer as JSON Schema means it: `8` and `8.0` are, `"8"` and `true` are not."""
    if isinstance(value, (str, bool)):
        raise ValueError("must be an integer")
    return value


JsonInt = Annotated[int, BeforeValidator(_json_integer)]
# A FAISS search parameter: bounds before the validator, so the OpenAPI document states them.
SearchParam = Annotated[int, Field(ge=1, le=65536), BeforeValidator(_json_integer)]
# A document id: likewise, and within JSON's exact integers (2**53 - 1; ids are row ids, far below),
# since a bound of 2**63 - 1 is read as the float 2**63 by JSON Schema validators, which then
# take 2**63 + 191 as within it.
DocId = Annotated[int, Field(ge=-(2**53 - 1), le=2**53 - 1), BeforeValidator(_json_integer)]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorDetail(BaseModel):
    code: str = Field(examples=["collection_not_found"])
    message: str = Field(examples=["no collection named 'x' (`rag collections` or GET /v1/collections lists them)"])


class ErrorOut(BaseModel):
    error: ErrorDetail


class PassageOut(_Open):
    rank: int
    score: float
    chunk_id: int
    doc_id: int
    external_id: str | None
    source: str
    title: str
    start: int = Field(description="character offset of the passage in its document")
    end: int
    ordinal: int
    text: str
    metadata: dict[str, Any]


class Filters(BaseModel):
    """Restrict which passages may be used. All given conditions must hold."""

    model_config = ConfigDict(extra="forbid")

    where: dict[str, Any] | None = Field(
        None,
        description="Chroma/Mongo-style filter on document metadata and the built-in fields source, doc_id, external_id, "
        "ingested_at: {field: value} or {field: {$eq|$ne|$gt|$gte|$lt|$lte|$in|$nin|$exists|$contains|$prefix: ...}}, "
        "combined with $and, $or, $not. Pushed down into the indexes: k matching passages come back when k exist.",
        examples=[{"year": {"$gte": 2020}, "tenant": "acme"}],
    )
    source_prefix: str | None = Field(None, max_length=500, examples=["upload/"])  # indexes.filters.MAX_STRING
    doc_ids: list[DocId] | None = Field(None, max_length=1000)
    metadata: dict[str, str | int | float | bool] | None = Field(None, description="exact matches on document metadata")


class SearchRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"query": "Where was Gabriel Lippmann born?", "collection": "default", "k": 5}]},
    )

    query: str = Field(min_length=1, description="at most RAG_MAX_QUERY_CHARS characters once trimmed")
    collection: str | None = Field(None, pattern=_NAME_PATTERN, description="default: the server's RAG_COLLECTION")
    k: JsonInt = Field(10, ge=1, le=1000, description="passages to return (at most RAG_MAX_K)")
    retriever: Literal["dense", "bm25", "hybrid"] | None = Field(None, description="default: the server's choice")
    filters: Filters | None = None
    nprobe: SearchParam | None = Field(
        None, description="IVF lists searched (IVF collections); default: the collection's, else tuned per segment when trained (recall@10 ~0.99)"
    )
    ef_search: SearchParam | None = Field(
        None, description="HNSW candidate list (HNSW collections); default: the collection's, else 64"
    )


class SearchResponse(BaseModel):
    collection: str
    query: str
    k: int
    retriever: str
    passages: list[PassageOut]
    took_ms: float


class AskRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"question": "Where was Gabriel Lippmann born?", "collection": "default", "mode": "extractive", "k": 5}]
        },
    )

    question: str = Field(min_length=1, description="at most RAG_MAX_QUERY_CHARS characters once trimmed")
    collection: str | None = Field(None, pattern=_NAME_PATTERN)
    mode: Literal["extractive", "generative"] = "extractive"
    k: Annotated[int, Field(ge=1, le=50), BeforeValidator(_json_integer)] | None = Field(
        None, description="passages read; default RAG_ANSWER_K"
    )
    retriever: Literal["dense", "bm25", "hybrid"] | None = Field(None, description="default: the server's choice")
    filters: Filters | None = None


class CitationOut(_Open):
    n: int = Field(description="[n] in the answer points at passages[n-1]")
    doc_id: int
    chunk_id: int
    source: str
    title: str
    start: int = Field(description="offset of the cited span in the document")
    end: int
    chunk_start: int = Field(description="offset of the cited span in the passage text")
    chunk_end: int
    text: str
    verified: bool
    score: float | None = None


class AnswerOut(_Open):
    answer: str
    mode: str
    found: bool
    fallback: str | None = Field(
        None, description="reader_span: the generator's sentences failed the check; the answer is the reader's verified span in its sentence"
    )
    score: float | None
    citations: list[CitationOut]
    passages: list[PassageOut]
    timings: dict[str, float]
    details: dict[str, Any]


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(None, min_length=1, max_length=200, description="default: derived from the text")
    title: str = Field("", max_length=2000)
    # Text with nothing but white space is accepted and reported by the job ("no text to index"),
    # like an empty file: a schema pattern for "not only white space" is read differently by
    # different JSON Schema generators, so the rule lives in one place, the ingest report.
    text: str = Field(min_length=1, description="a document with only white space is reported by the job, not stored")
    metadata: dict[str, Any] = Field(default_factory=dict)


class MetadataIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"metadata": {"year": 2024, "tags": ["a"]}}]})

    metadata: dict[str, Any] = Field(description="string, number, boolean, ISO date string or list of strings per key")
    merge: bool = Field(True, description="true: change only the keys given (null removes one); false: replace all")


class MetadataOut(BaseModel):
    collection: str
    document_id: int
    metadata: dict[str, Any]


class DocumentsIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"documents": [{"id": "lippmann", "title": "Gabriel Lippmann", "text": "Lippmann was born in Bonnevoie, Luxembourg."}]}
            ]
        },
    )

    documents: list[DocumentIn] = Field(min_length=1)


class JobError(_Open):
    source: str
    error: str


class JobOut(BaseModel):
    id: str
    collection: str
    kind: Literal["files", "documents"]
    status: Literal["queued", "running", "succeeded", "completed_with_errors", "failed"]
    total: int = Field(description="files (or documents) in the job")
    done: int = Field(description="files (or documents) processed so far")
    stats: dict[str, Any]
    errors: list[JobError]
    duplicates: list[str] = Field(
        default_factory=list, description="file names, document ids or record sources given more than once; the last of each was kept"
    )
    message: str
    created_at: str | None
    started_at: str | None
    finished_at: str | None


class DocumentOut(_Open):
    id: int
    external_id: str | None
    source: str
    title: str
    chunks: int
    characters: int
    content_hash: str
    metadata: dict[str, Any]
    created_at: str | None


class DocumentList(BaseModel):
    collection: str
    offset: int
    limit: int
    documents: list[DocumentOut]


class DeleteResponse(BaseModel):
    collection: str
    deleted: int
    document_ids: list[int]


class CollectionOut(_Open):
    collection: str
    documents: int
    chunks: int
    vectors: int
    index_factory: str
    encoder: dict[str, Any]
    dim: int


class CollectionList(BaseModel):
    collections: list[CollectionOut]


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, Any]
