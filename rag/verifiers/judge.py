"""The support judge: a (claim, passage) classifier's probability of "supported", at a threshold
calibrated on labelled pairs, plus only the rule guards measured to pay for themselves.

Kept apart from model loading (`rag.verifiers.nli.NLIVerifier` loads the cross-encoder and
exposes `probabilities(pairs)`), so the runtime that scores pairs can change without touching
the rules. The threshold and the guards come from a calibration file (`calibration.json` beside
this module, or `RAG_VERIFIER_CALIBRATION`), written from `rag eval verifiers --set ... --part
design`; the figures behind it are in docs/judge.md.

Guards (each measured on the test part of the verification sets): `names` (a name the claim gives
must be in the evidence sentence, or given by the question and found in the passage; a short
answer's sentence must share a word of what the question asks), `negation`,
`number`, `qualifier` ("before 1903" is not "in 1903"), `name order` (who did what to whom).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from indexes.errors import InvalidInput
from indexes.types import Passage
from rag.verifiers.base import Claim, Evidence, Source, answers_elsewhere, conflict_kinds, missing_names
from rag.verifiers.text import content_words

GUARDS = ("names", "negation", "number", "qualifier", "name order")
CALIBRATION_FILE = Path(__file__).with_name("calibration.json")
Scorer = Callable[[Sequence[tuple[str, str]]], list[float]]


@dataclass(frozen=True)
class Judgement:
    """One (claim, passage) pair: the evidence (verdict at the threshold with the enabled guards),
    the model's probability and every guard that fires on the evidence sentence, enabled or not."""

    evidence: Evidence
    probability: float
    fired: tuple[str, ...] = ()


@dataclass(frozen=True)
class Calibration:
    """What the calibration file says for one judge model: its threshold and the guards kept."""

    model: str
    threshold: float
    guards: tuple[str, ...]
    path: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, path: str | Path | None = None) -> Calibration:
        """The calibration at `path` (default: the one shipped beside this module)."""
        path = Path(path) if path is not None else CALIBRATION_FILE
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            threshold = float(raw["threshold"])
            guards = tuple(str(g) for g in raw["guards"])
            model = str(raw["model"])
        except FileNotFoundError as exc:
            raise InvalidInput(f"no verifier calibration file at {path} (RAG_VERIFIER_CALIBRATION)") from exc
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InvalidInput(f"{path}: not a verifier calibration (needs model, threshold, guards): {exc}") from exc
        unknown = set(guards) - set(GUARDS)
        if unknown or not 0.0 <= threshold <= 1.0:
            raise InvalidInput(f"{path}: threshold must be in [0, 1] and guards among {', '.join(GUARDS)} (got {threshold}, {sorted(unknown)})")
        return cls(model, threshold, guards, str(path), {k: v for k, v in raw.items() if k not in ("model", "threshold", "guards")})

    def fits(self, model: str) -> bool:
        """Whether this calibration was made for `model` (a folder or id: its last path part)."""
        return Path(model.rstrip("/")).name == self.model


def parse_guards(value: bool | str | Sequence[str]) -> tuple[str, ...]:
    """True: all guards; False: none; "names,number" or a sequence: those (checked)."""
    if value is True:
        return GUARDS
    if value is False:
        return ()
    names = [g.strip() for g in value.split(",")] if isinstance(value, str) else list(value)
    names = [g for g in names if g and g != "none"]
    unknown = set(names) - set(GUARDS)
    if unknown:
        raise InvalidInput(f"unknown verifier guard(s) {sorted(unknown)}: use {', '.join(GUARDS)} (or none)")
    return tuple(g for g in GUARDS if g in names)


def evidence_window(claim: Claim, source: Source) -> int:
    """The passage sentence that says the claim: the one holding most of what the claim adds to the
    question, then most of its words ("He was born in Paris" for "Jean Dupont was born in Paris"
    asked where Jean Dupont was born, not "Jean Dupont is a painter")."""
    words = claim.words | (Claim(claim.as_statement(), claim.question).words if claim.short else set())
    novel = words - content_words(claim.question)
    return max(range(len(source.windows)), key=lambda i: (len(novel & source.words[i]), len(words & source.words[i]), -i))


def guard_firings(claim: Claim, source: Source, window: int) -> tuple[str, ...]:
    """Every guard that rejects `claim` on sentence `window` of `source`."""
    fired = ["names"] if missing_names(claim, source, window) or answers_elsewhere(claim, source, window) else []
    fired.extend(conflict_kinds(claim.text, source.window_text(window), claim.question))
    return tuple(fired)


def judge(
    probabilities: Scorer, question: str, claims: Sequence[str], passages: Sequence[Passage], threshold: float, guards: Sequence[str]
) -> list[list[Judgement]]:
    """`judge(...)[i][n - 1]`: claim i against passage n. The model reads the claim (a short answer
    with its question) against the passage's title and its non-instruction sentences; a verdict needs
    P(supported) >= threshold and none of `guards` firing on the evidence sentence."""
    sources = [Source.of(p) for p in passages]
    parsed = [Claim(c, question) for c in claims]
    # the title leads the passage: "She was born in Warsaw" is about the Marie Curie it names
    pairs = [(c.as_statement(), f"{s.passage.title}. {s.clean_text()}" if s.passage.title else s.clean_text()) for c in parsed for s in sources]
    probs = iter(probabilities(pairs)) if pairs else iter(())
    enabled = set(guards)
    out = []
    for claim in parsed:
        row = []
        for n, source in enumerate(sources, start=1):
            p = float(next(probs))
            if not source.windows:
                row.append(Judgement(Evidence(n, 0, 0, p), p))
                continue
            window = evidence_window(claim, source)
            start, end = source.windows[window]
            fired = guard_firings(claim, source, window)
            ok = p >= threshold and not enabled.intersection(fired)
            row.append(Judgement(Evidence(n, start, end, p, ok), p, fired))
        out.append(row)
    return out
