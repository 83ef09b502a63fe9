"""Ranked passages for a query."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Depends, Request

from api.auth import require
from api.keys import Principal
from api.schemas import ErrorOut, Filters, SearchRequest, SearchResponse
from api.state import ApiState, api_state
from indexes.config import SearchParams
from indexes.errors import InvalidInput
from indexes.filters import Where
from indexes.types import Passage
from ingest.sources import public_source
from rag.retrieval import Retriever, validate_query

router = APIRouter(prefix="/v1", tags=["search"])


def get_retriever(state: ApiState, collection: str, kind: str | None, params: SearchParams | None = None) -> Any:
    """The collection's retriever of `kind` (None: RAG_RETRIEVER), with one request's FAISS
    search parameters (None: the server's and the collection's)."""
    return state.runtime.retriever(collection, kind, params)


def public(passage: Passage) -> dict[str, Any]:
    """A passage as API callers see it: its source a label, never a path on the server."""
    return {**passage.to_dict(), "source": public_source(passage.source, passage.metadata)}


def public_answer(answer: dict[str, Any]) -> dict[str, Any]:
    """`Answer.to_dict()` with the sources of its passages and citations made public."""
    passages = answer.get("passages") or []
    labels = [public_source(p["source"], p.get("metadata") or {}) for p in passages]
    shown = {p["source"]: label for p, label in zip(passages, labels)}
    return {
        **answer,
        "passages": [{**p, "source": label} for p, label in zip(passages, labels)],
        "citations": [
            {**c, "source": shown.get(c["source"], public_source(c["source"], {}))} for c in answer.get("citations") or []
        ],
    }


def matches(passage: Passage, filters: Filters) -> bool:
    if filters.source_prefix is not None and not public_source(passage.source, passage.metadata).startswith(filters.source_prefix):
        return False
    if filters.doc_ids is not None and passage.doc_id not in filters.doc_ids:
        return False
    if filters.metadata:
        for key, value in filters.metadata.items():
            if passage.metadata.get(key) != value:
                return False
    return True


def filtered_search(
    state: ApiState,
    collection: str,
    query: str,
    k: int,
    kind: str | None,
    filters: Filters | None,
    params: SearchParams | None = None,
    scope: Where | None = None,
) -> list[Passage]:
    """Top-k passages matching the request's filters and the key's `scope`, pushed down into the
    indexes (api/filtering.py, indexes/filtered.py): k come back whenever k match."""
    from api.filtering import request_where

    where = scope.and_(request_where(filters)) if scope else request_where(filters)
    if not where:
        return _retrieve(state, collection, query, k, kind, params)
    return list(get_retriever(state, collection, kind, params).with_where(where).retrieve(query, k))


def _retrieve(state: ApiState, collection: str, query: str, k: int, kind: str | None, params: SearchParams | None) -> list[Passage]:
    """One query's passages, batched with concurrent ones when the server batches (api.batching)."""
    if state.search_batcher is not None:
        return state.search_batcher.submit((collection, kind, k, params or SearchParams()), query)
    return list(get_retriever(state, collection, kind, params).retrieve(query, k))


class FilteredRetriever(Retriever):
    """A retriever whose results pass `filters` and `scope`; lets the answer pipeline honour
    /v1/ask filters and a key's mandatory filter."""

    def __init__(self, state: ApiState, collection: str, kind: str | None, filters: Filters | None, scope: Where | None = None) -> None:
        self.state, self.collection, self.kind, self.filters, self.scope = state, collection, kind, filters, scope

    def retrieve(self, query: str, k: int = 10) -> list[Passage]:
        return filtered_search(self.state, self.collection, query, k, self.kind, self.filters, scope=self.scope)

    def retrieve_many(self, queries: Sequence[str], k: int = 10) -> list[list[Passage]]:
        return [self.retrieve(query, k) for query in queries]


def _rerank(passage: Passage, rank: int) -> Passage:
    from dataclasses import replace

    return replace(passage, rank=rank)


@router.post(
    "/search",
    response_model=SearchResponse,
    summary="Ranked passages for a query",
    responses={404: {"model": ErrorOut}, 403: {"model": ErrorOut}, 422: {"model": ErrorOut}, 429: {"model": ErrorOut}},
)
def search(body: SearchRequest, request: Request, principal: Principal = Depends(require("read"))) -> dict[str, Any]:
    state = api_state(request)
    collection = state.collection_for(principal, body.collection)
    query = validate_query(body.query, state.settings.max_query_chars)
    if body.k > state.settings.max_k:
        raise InvalidInput(f"k must be between 1 and {state.settings.max_k}, not {body.k}")
    started = time.perf_counter()
    params = SearchParams(nprobe=body.nprobe, ef_search=body.ef_search)
    passages = filtered_search(state, collection, query, body.k, body.retriever, body.filters, params, principal.where_filter())
    return {
        "collection": collection,
        "query": query,
        "k": body.k,
        "retriever": body.retriever or "default",
        "passages": [public(p) for p in passages],
        "took_ms": round((time.perf_counter() - started) * 1000, 2),
    }
