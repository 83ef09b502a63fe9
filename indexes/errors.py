"""Exceptions a user can act on; the CLI and the API turn them into exit codes and HTTP errors."""

from __future__ import annotations


def not_utf8(exc: UnicodeDecodeError) -> str:
    """How undecodable input reads to a user: which byte, where, and what to do."""
    return f"not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); convert it to UTF-8"


class RagError(Exception):
    """Base of every error the library raises on purpose. The message is meant for the user."""

    code = "rag_error"


class InvalidInput(RagError):
    """A query, file or argument that cannot be used as given."""

    code = "invalid_input"


class InvalidConfig(InvalidInput):
    """A setting or collection option that cannot work (an index factory FAISS accepts but the store
    cannot use, a data home that is a file): fixed by changing the configuration, so the CLI exits 2."""

    code = "invalid_config"


class CollectionNotFound(RagError):
    code = "collection_not_found"


class DocumentNotFound(RagError):
    code = "document_not_found"


class EncoderMismatch(RagError):
    """The collection was built by another encoder; its vectors are not comparable."""

    code = "encoder_mismatch"


class ModelLoadError(RagError):
    code = "model_load_error"


class StoreInconsistent(RagError):
    """SQL and FAISS disagree and repair was not requested."""

    code = "store_inconsistent"


class MissingDependency(RagError):
    code = "missing_dependency"
