"""FAISS, imported on first use, so that commands and requests that never search (`rag --help`,
key management) do not pay for loading it."""

from __future__ import annotations

from typing import Any


def load_faiss() -> Any:
    """The `faiss` module (it ships no type information, hence Any)."""
    import faiss

    return faiss
