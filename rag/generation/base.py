"""The generator contract: chat messages in, text (or a stream of text pieces) out.

Every backend is greedy when the temperature is 0, so the same prompt gives the same answer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol, TypedDict, runtime_checkable

from indexes.errors import RagError


class Message(TypedDict):
    role: str
    content: str


class GenerationError(RagError):
    """The language model could not be loaded, reached or asked."""

    code = "generation_error"


@runtime_checkable
class Generator(Protocol):
    """A chat model. `name` says which backend and model, for logs and `Answer.details`."""

    name: str

    def generate(self, messages: Sequence[Message], max_tokens: int | None = None, stop: Sequence[str] | None = None) -> str:
        ...

    def stream(
        self, messages: Sequence[Message], max_tokens: int | None = None, stop: Sequence[str] | None = None
    ) -> Iterator[str]:
        ...


def cut_at_stop(text: str, stop: Sequence[str] | None) -> str:
    """Text before the first stop sequence (backends that cannot stop on strings themselves)."""
    if not stop:
        return text
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return text if cut < 0 else text[:cut]
