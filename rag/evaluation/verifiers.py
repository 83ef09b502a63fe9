"""Each support verifier on labelled (question, answer, passage) cases: accuracy and its misses.

A case is verified when the full citation check (`check_answer`, with fragments, cut sentences
and suspicious passages handled as in `rag ask`) returns an answer with a verified citation.
Cases live in a JSON-lines file (`examples/verifier-cases.jsonl`): the false positives and
negatives reported in issues 8 and 13, the known misses of the shared cross-encoder, and more.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indexes.errors import InvalidInput
from indexes.types import Passage
from rag.citations import check_answer
from rag.evaluation.files import read_utf8
from rag.verifiers.base import Verifier


@dataclass(frozen=True)
class VerifierCase:
    id: str
    kind: str
    label: bool
    question: str
    title: str
    passage: str
    answer: str
    source: str = "written"

    @property
    def source_issue(self) -> bool:
        """Reported in an issue or a model card (not written for this set)."""
        return self.source != "written"

    def as_passage(self) -> Passage:
        return Passage(
            chunk_id=1, doc_id=1, text=self.passage, start=0, end=len(self.passage), ordinal=0,
            source=f"{self.id}.txt", title=self.title, external_id=None, score=1.0, rank=1,
        )


def read_cases(path: str | Path) -> list[VerifierCase]:
    """The labelled cases of a JSON-lines file; a file without any is an error, not an empty table."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"no verifier cases at {path} (give --cases FILE, e.g. examples/verifier-cases.jsonl of the repository)")
    cases = []
    for number, line in enumerate(read_utf8(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            cases.append(
                VerifierCase(
                    raw["id"], raw["kind"], bool(raw["label"]), raw["question"], raw.get("title", ""), raw["passage"], raw["answer"],
                    raw.get("source", "written"),
                )
            )
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise InvalidInput(f"{path}:{number}: not a verifier case ({exc})") from exc
    if not cases:
        raise InvalidInput(f"{path}: no verifier cases")
    return cases


def verdict(case: VerifierCase, verifier: Verifier) -> bool:
    answer = check_answer(case.question, case.answer, [case.as_passage()], verifier=verifier)
    return answer.found and any(c.verified for c in answer.citations)


def evaluate_verifier(verifier: Verifier, cases: Sequence[VerifierCase]) -> dict[str, Any]:
    predicted = [verdict(c, verifier) for c in cases]
    right = [p == c.label for p, c in zip(predicted, cases)]
    return {
        "verifier": verifier.name,
        "cases": len(cases),
        "accuracy": round(sum(right) / len(cases), 4) if cases else None,
        "false_positives": [c.id for p, c in zip(predicted, cases) if p and not c.label],
        "false_negatives": [c.id for p, c in zip(predicted, cases) if c.label and not p],
    }


@dataclass(frozen=True)
class JudgedCase:
    """One labelled case as the judge sees it: whether the citation check's own filters (fragments,
    a restated question, suspicious passages) let it through, and per checked sentence the model's
    probability and the guards that fire. Any threshold and guard set is then replayed exactly."""

    case: VerifierCase
    checkable: bool
    sentences: tuple[tuple[float, tuple[str, ...]], ...]

    def verified(self, threshold: float, guards: frozenset[str] | set[str]) -> bool:
        return self.checkable and any(p >= threshold and not guards.intersection(fired) for p, fired in self.sentences)


class _ReplayJudge:
    """A judge at threshold 0 without guards (every pair counts as supported, so only the check's
    own filters decide `checkable`), scoring pairs from a cache and remembering its last call."""

    name = "judge-replay"
    note = ""

    def __init__(self, scores: dict[tuple[str, str], float]) -> None:
        self.scores = scores
        self.asked: list[tuple[str, str]] = []
        self.last: list[list[Any]] = []

    def probabilities(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        self.asked.extend(pairs)
        return [self.scores.get(pair, 1.0) for pair in pairs]

    def verify(self, question: str, claims: Sequence[str], passages: Sequence[Passage]) -> list[list[Any]]:
        from rag.verifiers.judge import judge

        self.last = judge(self.probabilities, question, claims, passages, 0.0, ())
        return [[j.evidence for j in row] for row in self.last]


def judge_cases(probabilities: Any, cases: Sequence[VerifierCase], batch: int = 256) -> list[JudgedCase]:
    """Every case through the full citation check once, the model's probabilities batched."""
    collect = _ReplayJudge({})
    for case in cases:
        check_answer(case.question, case.answer, [case.as_passage()], verifier=collect)
    pairs = list(dict.fromkeys(collect.asked))
    scores: dict[tuple[str, str], float] = {}
    for i in range(0, len(pairs), batch):
        part = pairs[i : i + batch]
        scores.update(zip(part, probabilities(part)))
    replay = _ReplayJudge(scores)
    out = []
    for case in cases:
        replay.last = []
        answer = check_answer(case.question, case.answer, [case.as_passage()], verifier=replay)
        sentences = tuple((row[0].probability, row[0].fired) for row in replay.last if row)
        out.append(JudgedCase(case, answer.found, sentences))
    return out


def training_pairs(cases: Sequence[VerifierCase]) -> list[tuple[str, str, int]]:
    """(statement, passage, label) exactly as the judge reads each case at answer time (the short
    answer with its question, the title before the passage), for training a judge on them; a case
    the citation check filters out before the judge gives none, a repeated pair is kept once."""
    collect = _ReplayJudge({})
    labelled: dict[tuple[str, str], int] = {}
    for case in cases:
        before = len(collect.asked)
        check_answer(case.question, case.answer, [case.as_passage()], verifier=collect)
        for pair in collect.asked[before:]:
            labelled.setdefault(pair, int(case.label))
    return [(claim, passage, label) for (claim, passage), label in labelled.items()]


def rates(judged: Sequence[JudgedCase], threshold: float, guards: frozenset[str] | set[str]) -> dict[str, Any]:
    """Supported cases verified (recall) and unsupported cases verified (false accepts)."""
    pos = [j for j in judged if j.case.label]
    neg = [j for j in judged if not j.case.label]
    tp = sum(j.verified(threshold, guards) for j in pos)
    fp = sum(j.verified(threshold, guards) for j in neg)
    return {
        "supported": len(pos),
        "unsupported": len(neg),
        "supported_verified": round(tp / len(pos), 4) if pos else None,
        "unsupported_verified": round(fp / len(neg), 4) if neg else None,
        "precision": round(tp / (tp + fp), 4) if tp + fp else None,
        "balanced_accuracy": round((tp / len(pos) + 1 - fp / len(neg)) / 2, 4) if pos and neg else None,
    }


THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999)
MAX_FALSE_ACCEPTS = 0.03  # the issue's target: at most 3% of unsupported claims verified


def choose_threshold(judged: Sequence[JudgedCase], guards: frozenset[str] | set[str], grid: Sequence[float] = THRESHOLDS) -> float:
    """The calibration rule: the threshold that verifies the most supported cases while verifying at
    most 3% of unsupported ones (ties to the higher threshold); if none does, the fewest false accepts."""
    rows = [(t, rates(judged, t, guards)) for t in grid]
    feasible = [(t, r) for t, r in rows if (r["unsupported_verified"] or 0.0) <= MAX_FALSE_ACCEPTS]
    if feasible:
        return max(feasible, key=lambda tr: (tr[1]["supported_verified"] or 0.0, tr[0]))[0]
    return min(rows, key=lambda tr: (tr[1]["unsupported_verified"] or 0.0, -(tr[1]["supported_verified"] or 0.0)))[0]


def guard_effects(judged: Sequence[JudgedCase], threshold: float, kept: Sequence[str], guards: Sequence[str]) -> list[dict[str, Any]]:
    """For each guard, against the judge at `threshold` with the other kept guards: supported cases
    it rejects that would be verified (recall lost) and unsupported ones it rejects that would be
    verified (false accepts prevented)."""
    out = []
    for g in guards:
        without = frozenset(kept) - {g}
        with_g = without | {g}
        lost = [j for j in judged if j.case.label and j.verified(threshold, without) and not j.verified(threshold, with_g)]
        prevented = [j for j in judged if not j.case.label and j.verified(threshold, without) and not j.verified(threshold, with_g)]
        pos = sum(j.case.label for j in judged)
        out.append(
            {
                "guard": g,
                "kept": g in kept,
                "recall_lost": len(lost),
                "recall_lost_rate": round(len(lost) / pos, 4) if pos else None,
                "false_accepts_prevented": len(prevented),
                "false_accepts_prevented_rate": round(len(prevented) / (len(judged) - pos), 4) if len(judged) > pos else None,
                "prevented_kinds": dict(sorted(_count(j.case.kind for j in prevented).items())),
                "lost_kinds": dict(sorted(_count(j.case.kind for j in lost).items())),
            }
        )
    return out


def choose_guards(judged: Sequence[JudgedCase], threshold: float, guards: Sequence[str]) -> list[str]:
    """Each guard alone on top of the bare judge: kept when it prevents more false accepts than the
    supported cases it rejects."""
    effects = guard_effects(judged, threshold, [], guards)
    return [e["guard"] for e in effects if e["false_accepts_prevented"] > e["recall_lost"]]


def by_kind(judged: Sequence[JudgedCase], threshold: float, guards: frozenset[str] | set[str]) -> dict[str, dict[str, Any]]:
    """Per (source, kind): cases and the share verified."""
    groups: dict[str, list[JudgedCase]] = {}
    for j in judged:
        groups.setdefault(f"{j.case.source.split(':')[0]}/{j.case.kind}", []).append(j)
    return {
        key: {"label": group[0].case.label, "cases": len(group), "verified": round(sum(j.verified(threshold, guards) for j in group) / len(group), 4)}
        for key, group in sorted(groups.items())
    }


def _count(items: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts


def verdicts(verifier: Verifier, cases: Sequence[VerifierCase]) -> dict[str, Any]:
    """Supported / unsupported verified rates of any verifier through the full check (slow ones too)."""
    predicted = [verdict(c, verifier) for c in cases]
    pos = [p for p, c in zip(predicted, cases) if c.label]
    neg = [p for p, c in zip(predicted, cases) if not c.label]
    return {
        "verifier": verifier.name,
        "supported": len(pos),
        "unsupported": len(neg),
        "supported_verified": round(sum(pos) / len(pos), 4) if pos else None,
        "unsupported_verified": round(sum(neg) / len(neg), 4) if neg else None,
    }
