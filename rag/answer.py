"""What a reader or generator returns: the answer, its citations, and the passages behind it.

One schema for `rag ask --json` and `POST /v1/ask`; `to_dict` is its only definition.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from indexes.types import Passage

Mode = Literal["extractive", "generative"]

# What every abstaining answer says, in both modes (the CLI, the API and the JSON alike).
NOT_IN_SOURCES = "Not in the sources."


@dataclass(frozen=True)
class Citation:
    """`[n]` in the answer points at passage n (1-based) of `Answer.passages`.

    `start`/`end` are character offsets in the source document (`doc_id`); `chunk_start`/
    `chunk_end` the same span inside the chunk's text. For an extractive answer the span is the
    answer itself; for a generative one, the supporting sentence found by the citation check.
    `origin` says who cited: "model" wrote `[n]` itself; "attributed" means the model left the
    sentence uncited and the citation check attached the passage that supports it.
    """

    n: int
    doc_id: int
    chunk_id: int
    source: str
    title: str
    start: int
    end: int
    chunk_start: int
    chunk_end: int
    text: str
    verified: bool
    score: float | None = None
    origin: Literal["model", "attributed"] = "model"

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "doc_id": self.doc_id,
            "chunk_id": self.chunk_id,
            "source": self.source,
            "title": self.title,
            "start": self.start,
            "end": self.end,
            "chunk_start": self.chunk_start,
            "chunk_end": self.chunk_end,
            "text": self.text,
            "verified": self.verified,
            "score": self.score,
            "origin": self.origin,
        }


@dataclass(frozen=True)
class Answer:
    answer: str
    mode: Mode
    citations: list[Citation] = field(default_factory=list)
    passages: list[Passage] = field(default_factory=list)
    score: float | None = None
    found: bool = True
    timings: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    # "reader_span": the generator's sentences failed the check, and the answer is the passage
    # sentence holding the reader's verified span (rag.guided); None: the answer is the generator's
    fallback: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "mode": self.mode,
            "found": self.found,
            "fallback": self.fallback,
            "score": self.score,
            "citations": [c.to_dict() for c in self.citations],
            "passages": [p.to_dict() for p in self.passages],
            "timings": self.timings,
            "details": self.details,
        }
