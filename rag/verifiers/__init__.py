"""Support verifiers behind one contract (`base.Verifier`), chosen by `Settings.verifier`.

`lexical` needs no model; `reader` asks the extractive reader; `nli` is the support judge: a
(claim, passage) cross-encoder from `Settings.verifier_model` at the threshold, and with the
guards, of its calibration file (`rag.verifiers.judge`). `auto` (the default) is the judge when a
judge model is configured and loads (on held-out verification pairs it verifies far more supported
claims than the reader or lexical checks at a few percent of unsupported ones: docs/judge.md), else
the reader when one is configured and loads, else the lexical one, so a machine without models
still answers. Heavy imports happen in the implementations.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from indexes.errors import InvalidInput, MissingDependency, ModelLoadError
from rag.verifiers.base import Evidence, Verifier
from rag.verifiers.lexical import DEFAULT_THRESHOLD, LexicalVerifier

if TYPE_CHECKING:
    from rag.settings import Settings

__all__ = ["DEFAULT_THRESHOLD", "Evidence", "LexicalVerifier", "Verifier", "build_judge", "build_verifier"]


def build_verifier(settings: Settings, reader: Callable[[], Any], device: str = "cpu") -> Verifier:
    """The verifier `settings.verifier` names; `reader` builds the extractive reader when needed;
    `device` is a resolved torch device (never `auto`)."""
    kind = settings.verifier
    if kind == "auto":
        if settings.verifier_model:
            try:
                return build_judge(settings, device, note="auto: the configured support judge")
            except (ModelLoadError, MissingDependency) as exc:
                fallback = f"auto: the support judge could not be loaded ({str(exc).split(' (')[0]})"
        else:
            fallback = ""
        try:
            loaded = reader()
        except (ModelLoadError, MissingDependency) as exc:
            return LexicalVerifier(settings.support_threshold, note=f"auto: the reader could not be loaded ({str(exc).split(' (')[0]})")
        from rag.verifiers.reader import ReaderVerifier

        return ReaderVerifier(loaded, note=fallback or "auto: the configured reader", threshold=settings.support_threshold)
    if kind == "lexical":
        return LexicalVerifier(settings.support_threshold)
    if kind == "reader":
        from rag.verifiers.reader import ReaderVerifier

        return ReaderVerifier(reader(), threshold=settings.support_threshold)
    if kind == "nli":
        if not settings.verifier_model:
            raise InvalidInput("verifier=nli needs RAG_VERIFIER_MODEL (a folder such as shared/models/verifier-minilm-l6-support)")
        return build_judge(settings, device)
    raise InvalidInput(f"unknown verifier {kind!r}: use auto, lexical, reader or nli")


def build_judge(settings: Settings, device: str = "cpu", note: str = "") -> Any:
    """The support judge at the threshold and guards the settings give, else those of the
    calibration file when it was made for this model, else 0.5 with every guard (and a note)."""
    from rag.verifiers.judge import GUARDS, Calibration, parse_guards
    from rag.verifiers.nli import NLIVerifier

    model = settings.verifier_model or ""
    calibration = Calibration.read(settings.verifier_calibration)
    fits = calibration.fits(model)
    threshold = settings.verifier_threshold if settings.verifier_threshold is not None else calibration.threshold if fits else 0.5
    guards = parse_guards(settings.verifier_guards) if settings.verifier_guards is not None else calibration.guards if fits else GUARDS
    judge = NLIVerifier(model, threshold=threshold, guards=guards, device=device, runtime=settings.reader_runtime)
    mismatch = f"{calibration.path} calibrates {calibration.model}, not this model: threshold 0.5 unless set"
    judge.note = note if fits else "; ".join(x for x in (note, mismatch) if x)
    return judge
