"""Question in, ranked passages out."""

from __future__ import annotations

from collections.abc import Sequence

from indexes.encoder import Encoder
from indexes.errors import InvalidInput
from indexes.store import Collection
from indexes.types import Passage


def validate_query(query: str, max_chars: int) -> str:
    cleaned = query.strip()
    if not cleaned:
        raise InvalidInput("the query is empty")
    if len(cleaned) > max_chars:
        raise InvalidInput(
            f"the query is {len(cleaned):,} characters; the limit is {max_chars:,} (RAG_MAX_QUERY_CHARS)"
        )
    return cleaned


class DenseRetriever:
    """Embeds queries with the collection's own encoder and searches its FAISS index."""

    def __init__(self, collection: Collection, encoder: Encoder, max_query_chars: int = 2000, max_k: int = 1000) -> None:
        collection.require_encoder(encoder.spec)
        self.collection = collection
        self.encoder = encoder
        self.max_query_chars = max_query_chars
        self.max_k = max_k

    def retrieve(self, query: str, k: int = 10) -> list[Passage]:
        return self.retrieve_many([query], k)[0]

    def retrieve_many(self, queries: Sequence[str], k: int = 10) -> list[list[Passage]]:
        if not 1 <= k <= self.max_k:
            raise InvalidInput(f"k must be between 1 and {self.max_k}, not {k}")
        cleaned = [validate_query(q, self.max_query_chars) for q in queries]
        vectors = self.encoder.encode(cleaned, kind="query")
        return self.collection.search(vectors, k)
