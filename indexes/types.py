"""Value objects that travel between ingestion, storage and answering.

Offsets are character offsets into `Document.text`, so any passage or answer can be
highlighted in its source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

Ranking = tuple[np.ndarray, np.ndarray]
"""(scores, chunk ids) of one query's candidates, best first: what the indexes return before SQL."""


@dataclass(frozen=True)
class Document:
    """One unit of identity and change: a file, a JSONL line or a SQuAD paragraph."""

    source: str
    text: str
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    external_id: str | None = None


@dataclass(frozen=True)
class Chunk:
    """A window of a document; `text == document.text[start:end]`."""

    text: str
    start: int
    end: int
    ordinal: int


@dataclass(frozen=True)
class Passage:
    """A retrieved chunk with everything needed to show and cite it."""

    chunk_id: int
    doc_id: int
    text: str
    start: int
    end: int
    ordinal: int
    source: str
    title: str
    external_id: str | None
    score: float
    rank: int
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "score": self.score,
            "chunk_id": self.chunk_id,
            "doc_id": self.doc_id,
            "external_id": self.external_id,
            "source": self.source,
            "title": self.title,
            "start": self.start,
            "end": self.end,
            "ordinal": self.ordinal,
            "text": self.text,
            "metadata": self.metadata,
        }
