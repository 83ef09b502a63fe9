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
