"""Chat-shaped questions and answers, for the OpenAI-compatible endpoint and the MCP tools.

A conversation becomes one question (the last user turn) and one retrieval query (that question
preceded by the earlier user turns, newest kept first when the length limit bites: the
"all previous utterances" baseline of conversational search, so that "and where did she die?"
after "Who was Marie Curie?" still finds Curie's passages). The reader or generator answers the
question alone. A checked `Answer` becomes chat text with `[n]` markers pointing at its citations.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from indexes.errors import InvalidInput
from indexes.types import Passage
from rag.answer import NOT_IN_SOURCES, Answer
from rag.retrieval import Retriever

PREFIX = "rag:"
_WORD = re.compile(r"\S+\s*|\s+")


@dataclass(frozen=True)
class Turn:
    role: str
    content: str


@dataclass(frozen=True)
class ChatQuestion:
    question: str
    retrieval_query: str


def collection_of(model: str) -> str:
    """`rag:NAME` or `NAME` -> NAME."""
    name = model.removeprefix(PREFIX).strip()
    if not name:
        raise InvalidInput("model must name a collection: 'NAME' or 'rag:NAME'")
    return name


def chat_question(turns: Sequence[Turn], max_chars: int) -> ChatQuestion:
    """The last user turn is the question; earlier user turns widen the retrieval query."""
    raw = [t.content for t in turns if t.role == "user"]
    users = [u.strip() for u in raw]
    if not users or not all(users):
        raise InvalidInput("the messages need a user turn, and no user turn may be blank: the last one is the question")
    longest = max(len(u) for u in raw)  # as sent, as the OpenAPI maxLength counts
    if longest > max_chars:
        raise InvalidInput(
            f"a user turn is {longest:,} characters; the limit is {max_chars:,} (RAG_MAX_QUERY_CHARS)"
        )
    question = users[-1]
    query = question
    for earlier in reversed(users[:-1]):
        widened = f"{earlier}\n{query}"
        if len(widened) > max_chars:
            break
        query = widened
    return ChatQuestion(question=question, retrieval_query=query)


class ContextRetriever(Retriever):
    """Retrieves with the conversation's query whatever question the pipeline passes."""

    def __init__(self, inner: Retriever, query: str) -> None:
        self.inner, self.query = inner, query
        self.max_query_chars, self.max_k = inner.max_query_chars, inner.max_k

    def retrieve(self, query: str, k: int = 10) -> list[Passage]:
        return self.inner.retrieve(self.query, k)

    def retrieve_many(self, queries: Sequence[str], k: int = 10) -> list[list[Passage]]:
        return self.inner.retrieve_many([self.query for _ in queries], k)


def answer_text(answer: Answer) -> str:
    """What a chat client shows: the checked answer with its `[n]` markers.

    An extractive answer is a span of passage n, so `[n]` follows it; a generative answer already
    carries the markers the citation check kept; no answer is said plainly.
    """
    if not answer.found or not answer.answer.strip():
        return answer.answer.strip() or NOT_IN_SOURCES
    if answer.mode == "extractive" and answer.citations:
        marks = "".join(f"[{c.n}]" for c in answer.citations)
        return f"{answer.answer.strip()} {marks}"
    return answer.answer.strip()


def pieces(text: str) -> list[str]:
    """Word-sized pieces (each with its trailing space) that concatenate back to `text`."""
    return _WORD.findall(text)
