"""Questions in, cited answers out: one JSON Answer, or SSE tokens then the final Answer.

The pipeline runs in a worker thread under the generation deadline; a stream's events are
`token` ({"text"}), then `answer` (the `Answer.to_dict()` JSON), or `error` ({"error": {...}}).
Generated tokens are a *draft*, streamed before the citation check: the `answer` event is the
answer. When the check rejects the draft, or drops some of its sentences, a `retract` event
({"reason", "draft", "dropped"}) comes first, so a client withdraws the text it showed and shows
the `answer` event's text (the supported sentences only); unverified text is never the answer.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any, cast

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse

from api.auth import require
from api.errors import ApiError, status_for
from api.keys import Principal
from api.routes.search import FilteredRetriever, public_answer
from api.schemas import AnswerOut, AskRequest, ErrorOut
from api.state import ApiState, api_state
from indexes.errors import RagError
from rag.retrieval import validate_query

if TYPE_CHECKING:
    from rag.answer import Answer
    from rag.qa import AskPipeline

router = APIRouter(prefix="/v1", tags=["ask"])
log = logging.getLogger(__name__)

_SSE_DOC = {
    "description": "An Answer; with `Accept: text/event-stream`, SSE events `token` (the unchecked draft), `retract` "
    "when the check rejects or cuts the draft, then `answer` (or `error`).",
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}


def _pipeline(state: ApiState, body: AskRequest, collection: str, principal: Principal | None = None) -> AskPipeline:
    """The shared pipeline, or for a filtered request (or a key with a mandatory filter) one whose
    retriever applies the filters (same reader and generator objects, so nothing loads twice)."""
    base = state.pipeline
    filters = body.filters
    scope = principal.where_filter() if principal is not None else None
    if scope is None and (filters is None or all(v is None for v in filters.model_dump().values())):
        return base
    return base.with_retriever(lambda name, kind: FilteredRetriever(state, name or collection, kind, filters, scope))


def _call_args(body: AskRequest, question: str, collection: str, k: int) -> dict[str, Any]:
    return {"question": question, "collection": collection, "mode": body.mode, "k": k, "retriever": body.retriever}


def _sse(event: str, payload: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(payload, ensure_ascii=False, default=str)}\n\n".encode()


def _error_payload(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, RagError):
        return {"error": {"code": exc.code, "message": str(exc)}, "status": status_for(exc)}
    if isinstance(exc, ApiError):
        return {"error": {"code": exc.code, "message": exc.message}, "status": exc.status}
    log.exception("answer stream failed", exc_info=exc)
    return {"error": {"code": "internal_error", "message": "internal error; the server log has the details"}, "status": 500}


_DONE = object()


@router.post(
    "/ask",
    response_model=AnswerOut,
    summary="Answer a question with citations",
    responses={
        200: _SSE_DOC,
        403: {"model": ErrorOut},
        404: {"model": ErrorOut},
        422: {"model": ErrorOut},
        429: {"model": ErrorOut},
        501: {"model": ErrorOut},
        504: {"model": ErrorOut},
    },
)
async def ask(body: AskRequest, request: Request, principal: Principal = Depends(require("read"))) -> Any:
    state = api_state(request)
    collection = state.collection_for(principal, body.collection)
    question = validate_query(body.question, state.settings.max_query_chars)
    k = body.k or state.settings.answer_k
    await run_in_threadpool(state.runtime.collection, collection)  # 404 before anything starts
    pipeline = _pipeline(state, body, collection, principal)
    timeout = state.settings.generation_timeout_s
    if "text/event-stream" in request.headers.get("accept", ""):
        args = _call_args(body, question, collection, k)
        events = await run_in_threadpool(lambda: iter(pipeline.stream(**args)))
        return StreamingResponse(
            _stream(events, timeout),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
    args = _call_args(body, question, collection, k)
    try:
        with anyio.fail_after(timeout):
            answer = await anyio.to_thread.run_sync(lambda: pipeline.ask(**args), abandon_on_cancel=True)
    except TimeoutError:
        raise ApiError(504, "timeout", f"no answer within {timeout:g} s (RAG_GENERATION_TIMEOUT_S)") from None
    return JSONResponse(public_answer(answer.to_dict()))


async def _stream(events: Iterator[Any], timeout: float) -> AsyncIterator[bytes]:
    deadline = time.monotonic() + timeout
    draft: list[str] = []
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                yield _sse("error", {"error": {"code": "timeout", "message": f"no answer within {timeout:g} s"}, "status": 504})
                return
            try:
                with anyio.fail_after(remaining):
                    item = await anyio.to_thread.run_sync(next, events, _DONE, abandon_on_cancel=True)
            except TimeoutError:
                yield _sse("error", {"error": {"code": "timeout", "message": f"no answer within {timeout:g} s"}, "status": 504})
                return
            except Exception as exc:  # reported in-band: the 200 status line is already sent
                yield _sse("error", _error_payload(exc))
                return
            if item is _DONE:
                return
            if isinstance(item, str):
                draft.append(item)
                yield _sse("token", {"text": item})
            else:
                item = cast("Answer", item)  # the stream yields draft text, then one Answer
                dropped = item.details.get("unsupported_sentences", []) if item.mode == "generative" else []
                if draft and item.mode == "generative" and (not item.found or dropped):
                    reason = item.details.get("reason", "sentences the sources do not support were dropped")
                    yield _sse("retract", {"reason": reason, "draft": "".join(draft), "dropped": dropped})
                yield _sse("answer", public_answer(item.to_dict()))
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            try:
                close()
            except ValueError:  # still running in its worker thread; it ends on its own
                pass
