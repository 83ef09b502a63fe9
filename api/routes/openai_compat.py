"""OpenAI-compatible chat completions and models, so OpenAI SDKs and chat front-ends can ask.

`model` names a collection (`NAME` or `rag:NAME`); `GET /v1/models` lists the collections the key
may see. The reply's content is the checked answer (`rag.qa.AskPipeline`) with `[n]` markers; the
sources travel in two extra top-level fields that OpenAI clients ignore: `citations`
(`Citation.to_dict()` list, `n` matching the markers) and `rag` (found, mode, score, collection,
passages, timings). With `stream: true` the answer is checked first and then sent as
`chat.completion.chunk` frames ending in `data: [DONE]`: no unchecked text ever reaches the client.
Extra request fields `mode`, `k` and `retriever` choose as in `/v1/ask`; other OpenAI sampling
parameters are accepted and ignored (the answer comes from the configured reader or generator).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any, Literal

import anyio
from fastapi import APIRouter, Depends, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.auth import check_collection, require
from api.errors import ApiError
from api.keys import Principal
from api.routes.search import get_retriever
from api.schemas import ErrorOut, Filters
from api.state import ApiState, api_state
from rag.answer import Answer
from rag.chat import ChatQuestion, ContextRetriever, Turn, answer_text, chat_question, collection_of, pieces

router = APIRouter(prefix="/v1", tags=["openai"])


def _whole(value: Any) -> Any:
    """JSON Schema's integer: 3 and 3.0, never "3" or 3.5."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# strict: a JSON `"stream": "yes"` or `"k": "5"` is refused (422), not coerced.
class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | None = Field(None, description="text; a user turn's must not be blank (at most RAG_MAX_QUERY_CHARS)")


class ChatRequest(BaseModel):
    """The OpenAI request; unknown OpenAI parameters are ignored, not refused."""

    model_config = ConfigDict(
        extra="ignore",
        strict=True,
        json_schema_extra={"examples": [{"model": "docs", "messages": [{"role": "user", "content": "Where was Marie Curie born?"}]}]},
    )

    model: str = Field(pattern=r"^(rag:)?[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="a collection: NAME or rag:NAME")
    messages: list[ChatMessage] = Field(
        min_length=1, max_length=200, description="the last user turn is the question; earlier user turns widen retrieval"
    )
    stream: bool = False
    mode: Literal["extractive", "generative"] | None = Field(None, description="rag extension; default RAG_ANSWER_MODE")
    k: int | None = Field(None, ge=1, le=50, description="rag extension: passages read (default RAG_ANSWER_K)")
    retriever: Literal["dense", "bm25", "hybrid"] | None = Field(None, description="rag extension")
    filters: Filters | None = Field(None, description="rag extension: the filter of /v1/search (extra_body with the openai SDK)")

    _k_as_json_integer = field_validator("k", mode="before")(_whole)


def openapi_limits(schemas: dict[str, Any], max_chars: int) -> None:
    """What `chat_question` demands, in the request's JSON schema: a user turn, and every user
    turn's text not blank and at most `max_chars` (RAG_MAX_QUERY_CHARS) long."""
    user = {"properties": {"role": {"const": "user"}}, "required": ["role"]}
    text = {"type": "string", "pattern": r"\S", "maxLength": max_chars}
    schemas["ChatRequest"]["properties"]["messages"]["contains"] = user
    schemas["ChatMessage"]["if"] = user
    schemas["ChatMessage"]["then"] = {"properties": {"content": text}, "required": ["content"]}


def _collection(state: ApiState, principal: Principal, model: str) -> str:
    name = collection_of(model)
    check_collection(principal, name)
    state.runtime.collection(name)  # 404 for an unknown collection
    return name


def _ask(state: ApiState, collection: str, asked: ChatQuestion, body: ChatRequest, principal: Principal | None = None) -> Answer:
    from api.filtering import request_where, scoped

    base = state.pipeline
    where = request_where(body.filters)
    if principal is not None:
        where = scoped(principal, where)

    def retriever(name: str | None, kind: str | None) -> Any:
        found = get_retriever(state, name or collection, kind)
        return ContextRetriever(found.with_where(where) if where else found, asked.retrieval_query)

    pipeline = base.with_retriever(retriever)
    return pipeline.ask(asked.question, collection, body.mode, body.k, body.retriever)


def _extras(answer: Answer, collection: str) -> dict[str, Any]:
    return {
        "citations": [c.to_dict() for c in answer.citations],
        "rag": {
            "collection": collection,
            "found": answer.found,
            "mode": answer.mode,
            "score": answer.score,
            "passages": [p.to_dict() for p in answer.passages],
            "timings": answer.timings,
            "details": answer.details,
        },
    }


def _frame(payload: Any) -> bytes:
    return f"data: {json.dumps(payload, ensure_ascii=False, default=str)}\n\n".encode()


def _chunks(answer: Answer, collection: str, model: str, completion_id: str, created: int) -> Iterator[bytes]:
    head = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model}
    yield _frame({**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
    for piece in pieces(answer_text(answer)):
        yield _frame({**head, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
    yield _frame({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], **_extras(answer, collection)})
    yield b"data: [DONE]\n\n"


@router.post(
    "/chat/completions",
    summary="OpenAI-compatible chat completion: the checked answer from a collection",
    responses={
        200: {
            "description": "A `chat.completion`; with `stream: true`, SSE events whose `data` is a "
            "`chat.completion.chunk` (the last one carries `citations` and `rag`), then `[DONE]`.",
            "content": {
                "text/event-stream": {  # OpenAPI 3.1: `schema` describes one event
                    "schema": {"type": "object", "required": ["data"], "properties": {"data": {"type": "string"}}}
                }
            },
        },
        403: {"model": ErrorOut},
        404: {"model": ErrorOut},
        422: {"model": ErrorOut},
        429: {"model": ErrorOut},
        504: {"model": ErrorOut},
    },
)
async def chat_completions(body: ChatRequest, request: Request, principal: Principal = Depends(require("read"))) -> Any:
    state = api_state(request)
    collection = await run_in_threadpool(_collection, state, principal, body.model)
    asked = chat_question([Turn(m.role, m.content or "") for m in body.messages], state.settings.max_query_chars)
    timeout = state.settings.generation_timeout_s
    try:
        with anyio.fail_after(timeout):
            answer = await anyio.to_thread.run_sync(lambda: _ask(state, collection, asked, body, principal), abandon_on_cancel=True)
    except TimeoutError:
        raise ApiError(504, "timeout", f"no answer within {timeout:g} s (RAG_GENERATION_TIMEOUT_S)") from None
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    if body.stream:
        return StreamingResponse(
            _chunks(answer, collection, body.model, completion_id, created),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
    return JSONResponse(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": body.model,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": answer_text(answer)}, "finish_reason": "stop"}
            ],
            **_extras(answer, collection),
        }
    )


def _model(name: str, created: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": "rag"}


@router.get("/models", summary="OpenAI-compatible list of models: the collections this key may see")
def list_models(request: Request, principal: Principal = Depends(require("read"))) -> dict[str, Any]:
    store = api_state(request).runtime.store
    created = int(time.time())
    return {"object": "list", "data": [_model(n, created) for n in store.collection_names() if principal.sees(n)]}


@router.get("/models/{model}", summary="One collection as an OpenAI model", responses={403: {"model": ErrorOut}, 404: {"model": ErrorOut}})
def get_model(
    request: Request,
    model: str = Path(max_length=100, description="NAME or rag:NAME"),
    principal: Principal = Depends(require("read")),
) -> dict[str, Any]:
    _collection(api_state(request), principal, model)
    return _model(model, int(time.time()))
