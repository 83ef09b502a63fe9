"""Support verifiers behind one contract (`base.Verifier`), chosen by `Settings.verifier`.

`lexical` needs no model; `reader` asks the extractive reader; `nli` loads a (claim, passage)
cross-encoder from `Settings.verifier_model` (default: the shipped one). `auto` (the default) is
the reader when it loads (the shipped one unless RAG_READER_MODEL names another), since it verified
no sentence on unanswerable questions where the lexical check verified some, and the lexical one
otherwise, so a machine without a reader still answers.
Heavy imports happen in the implementations.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from indexes.errors import InvalidInput, MissingDependency, ModelLoadError
from rag.verifiers.base import Evidence, Verifier
from rag.verifiers.lexical import DEFAULT_THRESHOLD, LexicalVerifier

if TYPE_CHECKING:
    from rag.settings import Settings

__all__ = ["DEFAULT_THRESHOLD", "Evidence", "LexicalVerifier", "Verifier", "build_verifier"]


def build_verifier(settings: Settings, reader: Callable[[], Any], device: str = "cpu") -> Verifier:
    """The verifier `settings.verifier` names; `reader` builds the extractive reader when needed;
    `device` is a resolved torch device (never `auto`)."""
    kind = settings.verifier
    if kind == "auto":
        try:
            loaded = reader()
        except (ModelLoadError, MissingDependency) as exc:
            return LexicalVerifier(settings.support_threshold, note=f"auto: the reader could not be loaded ({str(exc).split(' (')[0]})")
        from rag.verifiers.reader import ReaderVerifier

        return ReaderVerifier(loaded, note="auto: the configured reader", threshold=settings.support_threshold)
    if kind == "lexical":
        return LexicalVerifier(settings.support_threshold)
    if kind == "reader":
        from rag.verifiers.reader import ReaderVerifier

        return ReaderVerifier(reader(), threshold=settings.support_threshold)
    if kind == "nli":
        from rag.verifiers.nli import NLIVerifier

        if not settings.verifier_model:
            raise InvalidInput("verifier=nli needs RAG_VERIFIER_MODEL (a folder such as shared/models/verifier-minilm-l6-support)")
        return NLIVerifier(settings.verifier_model, threshold=settings.verifier_threshold, device=device, runtime=settings.reader_runtime)
    raise InvalidInput(f"unknown verifier {kind!r}: use auto, lexical, reader or nli")
