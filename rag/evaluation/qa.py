"""Open-domain QA over a SQuAD file used as a corpus: retrieval top-k accuracy, answer EM/F1,
citation precision and verified-answer rate (generative), and latency.

Definitions:
- top-k accuracy: a retrieved passage contains a gold answer, both SQuAD-normalised (the DPR
  "has answer" test).
- EM/F1: official SQuAD v1.1 scoring of the final answer against the gold answers, citation
  markers removed; an answer that says the sources do not contain it is scored as "".
- citation precision (generative): of all citations in answers, the share whose passage contains a
  gold answer or which the citation check verified for its sentence.
- verified-answer rate: answers with at least one verified citation, over all questions.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rag.answer import Answer
from rag.evaluation.squad import SquadQuestion, best_over_golds, normalize_answer

_CITATION = re.compile(r"\s*\[\s*\d{1,3}(?:\s*[,;]\s*\d{1,3})*\s*\]")


def contains_answer(text: str, golds: Sequence[str]) -> bool:
    haystack = f" {normalize_answer(text)} "
    return any(f" {normalize_answer(g)} " in haystack for g in golds if normalize_answer(g))


def prediction_text(answer: Answer) -> str:
    return _CITATION.sub("", answer.answer).strip() if answer.found else ""


@dataclass(frozen=True)
class QARecord:
    question: SquadQuestion
    answer: Answer

    def to_dict(self) -> dict[str, Any]:
        em, f1 = best_over_golds(prediction_text(self.answer), self.question.answers)
        return {
            "id": self.question.id,
            "question": self.question.question,
            "golds": list(self.question.answers),
            "answer": self.answer.answer,
            "generated": self.answer.details.get("generated"),
            "reason": self.answer.details.get("reason"),
            "found": self.answer.found,
            "em": em,
            "f1": f1,
            "retrieval_hit": contains_answer(" ".join(p.text for p in self.answer.passages), self.question.answers),
            "citations": [{"n": c.n, "verified": c.verified} for c in self.answer.citations],
            "total_ms": self.answer.timings.get("total_ms"),
            # extractive: every passage's candidate span, so the choice can be replayed under other rules
            "candidates": self.answer.details.get("candidates"),
        }


def score_qa(records: Sequence[QARecord], retrieved: Sequence[Sequence[str]], k: int) -> dict[str, Any]:
    """`retrieved[i]`: the texts of the top-k passages retrieved for `records[i]` (before reading)."""
    if not records:
        return {"questions": 0}
    n = len(records)
    hits = sum(contains_answer(" \n ".join(texts[:k]), r.question.answers) for r, texts in zip(records, retrieved))
    scores = [best_over_golds(prediction_text(r.answer), r.question.answers) for r in records]
    cited = [(r, c) for r in records for c in r.answer.citations]
    passage_text = {
        (id(r), c.n): (r.answer.passages[c.n - 1].text if 0 < c.n <= len(r.answer.passages) else c.text) for r, c in cited
    }
    precise = sum(c.verified or contains_answer(passage_text[(id(r), c.n)], r.question.answers) for r, c in cited)
    totals = np.array([r.answer.timings.get("total_ms", 0.0) for r in records])
    stages: dict[str, float] = {}
    for key in ("retrieve_ms", "read_ms", "generate_ms", "check_ms"):
        values = [r.answer.timings[key] for r in records if key in r.answer.timings]
        if values:
            stages[f"{key[:-3]}_mean_ms"] = round(float(np.mean(values)), 2)
    return {
        "questions": n,
        "k": k,
        f"top{k}_accuracy": round(hits / n, 4),
        "exact_match": round(100.0 * sum(em for em, _ in scores) / n, 2),
        "f1": round(100.0 * sum(f1 for _, f1 in scores) / n, 2),
        "answered_rate": round(sum(r.answer.found for r in records) / n, 4),
        "citations": len(cited),
        "citation_precision": round(precise / len(cited), 4) if cited else None,
        "verified_citation_rate": round(sum(c.verified for _, c in cited) / len(cited), 4) if cited else None,
        "verified_answer_rate": round(sum(any(c.verified for c in r.answer.citations) for r in records) / n, 4),
        "latency_p50_ms": round(float(np.percentile(totals, 50)), 2),
        "latency_p95_ms": round(float(np.percentile(totals, 95)), 2),
        **stages,
    }


def spread(questions: Sequence[SquadQuestion], limit: int | None) -> list[SquadQuestion]:
    """`limit` questions evenly spaced through the file, so that every article is asked about
    (the first N would all come from the first article)."""
    if limit is None or limit >= len(questions):
        return list(questions)
    if limit <= 0:
        return []
    step = len(questions) / limit
    return [questions[int(i * step)] for i in range(limit)]


def evaluate_qa(
    ask: Callable[[str], Answer],
    questions: Sequence[SquadQuestion],
    k: int,
    progress: Callable[[int], None] | None = None,
) -> tuple[dict[str, Any], list[QARecord]]:
    """Ask every question; top-k accuracy is measured on `Answer.passages` before reading."""
    records: list[QARecord] = []
    retrieved: list[list[str]] = []
    for question in questions:
        answer = ask(question.question)
        records.append(QARecord(question, answer))
        retrieved.append([p.text for p in answer.passages])
        if progress:
            progress(1)
    return score_qa(records, retrieved, k), records
