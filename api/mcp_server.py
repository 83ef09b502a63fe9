"""The Model Context Protocol server behind `rag mcp`: `search`, `ask` and `list_collections` tools.

Agents and IDE assistants start it as a subprocess and speak JSON-RPC over its stdin/stdout
(`mcp` package, `MCPServer`). Tools take typed, bounded arguments (their JSON schemas come from the
signatures) and return typed results; a library error becomes a tool error with the same one-line
message the CLI prints, and arguments that break the schema one line naming each bad field.
Models load on the first call that needs them, so the handshake is fast.
The process is local and trusted like the CLI: there are no keys, it sees every collection.
"""

# No `from __future__ import annotations`: the tools' signatures are read at run time for their
# JSON schemas, and their bounds come from the settings in scope.
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.context import Context
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.types import CallToolResult, InputRequiredResult
from pydantic import BaseModel, Field, ValidationError

from indexes.errors import RagError
from indexes.filters import parse_where
from rag.chat import answer_text
from rag.retrieval import validate_query
from rag.runtime import Runtime

Retriever = Literal["dense", "bm25", "hybrid"]
Mode = Literal["extractive", "generative"]
CollectionName = Annotated[
    str | None,
    Field(description="collection name; default RAG_COLLECTION", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"),
]


class PassageHit(BaseModel):
    rank: int
    score: float
    source: str = Field(description="file path, or path#id for records inside JSONL/SQuAD files")
    title: str
    start: int = Field(description="character offset of the passage in its document")
    end: int
    text: str


class SearchResult(BaseModel):
    collection: str
    passages: list[PassageHit]


class CitationOut(BaseModel):
    n: int = Field(description="the [n] marker in the answer; passage n of `passages`")
    source: str
    start: int
    end: int
    text: str = Field(description="the cited span (extractive) or the supporting sentence (generative)")
    verified: bool


class AskResult(BaseModel):
    answer: str = Field(description="the checked answer with [n] citation markers")
    found: bool = Field(description="false when the sources do not contain the answer")
    mode: Mode
    score: float | None
    citations: list[CitationOut]
    passages: list[PassageHit]
    dropped: list[str] = Field(
        default_factory=list,
        description="generative: sentences the model wrote that no source supports; not part of the answer",
    )
    verifier: str | None = Field(None, description="generative: the support check that judged the sentences")
    fallback: str | None = Field(
        None, description="generative: 'reader_span' when the answer is the reader's span in its passage sentence, not the model's"
    )


class CollectionInfo(BaseModel):
    name: str
    documents: int
    chunks: int
    embedding_model: str


def _hits(passages: list[Any]) -> list[PassageHit]:
    return [
        PassageHit(rank=p.rank, score=p.score, source=p.source, title=p.title, start=p.start, end=p.end, text=p.text)
        for p in passages
    ]


@contextmanager
def _as_tool_errors() -> Iterator[None]:
    """A library error reaches the agent as the CLI's one-line message (the SDK hides others)."""
    try:
        yield
    except RagError as exc:
        raise ToolError(str(exc)) from exc


WhereArg = Annotated[
    dict[str, Any] | None,
    Field(
        description='filter on document metadata, Chroma/Mongo style: {"year": {"$gte": 2020}, "tenant": "acme"}; '
        "operators $eq $ne $gt $gte $lt $lte $in $nin $exists $contains $prefix, combined with $and $or $not; "
        "built-in fields source, doc_id, external_id, ingested_at"
    ),
]


def _invalid_arguments(tool: str, error: ValidationError) -> str:
    """`invalid arguments for search: k: Input should be ...; query: Field required`: one line, each
    field with pydantic's message, without the rejected values or the documentation links."""
    parts = []
    for item in error.errors(include_url=False, include_input=False):
        field = ".".join(str(part) for part in item["loc"]) or "arguments"
        parts.append(f"{field}: {' '.join(str(item['msg']).split())}")
    return f"invalid arguments for {tool}: " + "; ".join(parts)


class _RagServer(MCPServer):
    """`MCPServer` whose argument-validation failures read as one line.

    The library validates a call's arguments before the tool function runs and reports a failure as
    `ToolError("Error executing tool <name>: <pydantic's multi-line report>")` caused by the
    `ValidationError`; `call_tool` is the public method every `tools/call` goes through, so the
    message is rewritten here (the cause is kept: the library logs its field names)."""

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(exc, UnexpectedToolError) or not isinstance(cause, ValidationError):
                raise
            raise ToolError(_invalid_arguments(name, cause)) from cause


def build_server(runtime: Runtime) -> MCPServer:
    """An `MCPServer` whose tools answer from `runtime`'s store and models."""
    settings = runtime.settings
    pipeline = runtime.ask_pipeline()
    server = _RagServer(
        "rag",
        instructions=(
            "Search and question a local document collection. `ask` returns an answer whose [n] markers "
            "cite `passages[n-1]`; found=false means the documents do not contain the answer."
        ),
    )

    @server.tool()
    def list_collections() -> list[CollectionInfo]:
        """The collections that can be searched, with their sizes."""
        store = runtime.store
        infos: list[CollectionInfo] = []
        for name in store.collection_names():
            found = store.collection(name)
            stats = found.stats()
            infos.append(
                CollectionInfo(
                    name=name,
                    documents=int(stats["documents"]),
                    chunks=int(stats["chunks"]),
                    embedding_model=str(found.config.encoder.model),
                )
            )
        return infos

    @server.tool()
    def search(
        query: Annotated[str, Field(min_length=1, max_length=settings.max_query_chars, description="what to look for")],
        collection: CollectionName = None,
        k: Annotated[int, Field(ge=1, le=50, description="passages to return")] = 5,
        retriever: Annotated[Retriever | None, Field(description="default RAG_RETRIEVER")] = None,
        where: WhereArg = None,
    ) -> SearchResult:
        """Ranked passages of a collection for a query (hybrid dense + BM25 retrieval by default),
        only among documents matching `where` when given."""
        name = collection or settings.collection
        with _as_tool_errors():
            text = validate_query(query, settings.max_query_chars)
            chosen = runtime.retriever(name, retriever)
            if where:
                chosen = chosen.with_where(parse_where(where))
            return SearchResult(collection=name, passages=_hits(chosen.retrieve(text, k)))

    @server.tool()
    def ask(
        question: Annotated[str, Field(min_length=1, max_length=settings.max_query_chars)],
        collection: CollectionName = None,
        mode: Annotated[Mode | None, Field(description="extractive (a span of a passage) or generative; default RAG_ANSWER_MODE")] = None,
        k: Annotated[int | None, Field(ge=1, le=50, description="passages read; default RAG_ANSWER_K")] = None,
        where: WhereArg = None,
    ) -> AskResult:
        """Answer a question from a collection; every [n] in the answer cites a passage and was checked.
        With `where`, only passages of documents matching it are read."""
        name = collection or settings.collection
        with _as_tool_errors():
            chosen = pipeline
            if where:
                parsed = parse_where(where)
                chosen = pipeline.with_retriever(lambda n, kind: runtime.retriever(n or name, kind).with_where(parsed))
            answer = chosen.ask(validate_query(question, settings.max_query_chars), name, mode, k)
        return AskResult(
            answer=answer_text(answer),
            found=answer.found,
            mode=answer.mode,
            score=answer.score,
            citations=[
                CitationOut(n=c.n, source=c.source, start=c.start, end=c.end, text=c.text, verified=c.verified)
                for c in answer.citations
            ],
            passages=_hits(answer.passages),
            dropped=answer.details.get("unsupported_sentences", []),
            verifier=answer.details.get("verifier"),
            fallback=answer.fallback,
        )

    return server


def serve_stdio(runtime: Runtime) -> None:
    import anyio

    anyio.run(_serve_stdio, build_server(runtime))


async def _serve_stdio(server: MCPServer) -> None:
    """`MCPServer.run("stdio")`, except that a line that is not a JSON-RPC message gets the
    JSON-RPC parse error reply (-32700, id null) instead of silence: the library's stdio transport
    hands the parse failure to the session, which answers nothing."""
    import anyio
    from mcp import types
    from mcp.server.stdio import stdio_server
    from mcp.shared.message import SessionMessage

    lowlevel = server._lowlevel_server
    async with stdio_server() as (read_stream, write_stream):
        forward, receive = anyio.create_memory_object_stream[SessionMessage | Exception](0)

        async def pump() -> None:
            async with forward:
                async for item in read_stream:
                    if isinstance(item, Exception):
                        first = str(item).strip().splitlines()[0] if str(item).strip() else type(item).__name__
                        error = types.ErrorData(code=types.PARSE_ERROR, message=f"parse error: {first}")
                        await write_stream.send(SessionMessage(types.JSONRPCError(jsonrpc="2.0", id=None, error=error)))
                        continue
                    await forward.send(item)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(pump)
            await lowlevel.run(receive, write_stream, lowlevel.create_initialization_options())
            tasks.cancel_scope.cancel()
