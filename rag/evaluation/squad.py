"""SQuAD v1.1 data and scoring: the official answer normalisation, EM/F1 and a JSON reader.

The only place the normalisation lives, so every EM/F1 the project prints lines up with the
published tables. Standard library only: the reference script runs it under another venv.
"""

from __future__ import annotations

import collections
import gzip
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indexes.errors import InvalidInput, not_utf8

# the answer path compares spans with it too, so it lives there; evaluation re-exports it
from rag.verifiers.text import normalize_answer as normalize_answer


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str) -> float:
    """Token-level F1 between the normalised strings (bag of tokens, as the official script)."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def best_over_golds(prediction: str, golds: Sequence[str]) -> tuple[float, float]:
    """(EM, F1) of one prediction: the maximum over the gold answers, each on a 0-1 scale."""
    if not golds:
        raise InvalidInput("a SQuAD v1.1 question needs at least one gold answer")
    return max(exact_match(prediction, g) for g in golds), max(f1_score(prediction, g) for g in golds)


def score_predictions(predictions: dict[str, str], questions: Iterable[SquadQuestion]) -> dict[str, float]:
    """EM and F1 on a 0-100 scale over `questions`; a question without a prediction scores 0."""
    em_total = f1_total = 0.0
    count = 0
    for q in questions:
        count += 1
        if q.id in predictions:
            em, f1 = best_over_golds(predictions[q.id], q.answers)
            em_total += em
            f1_total += f1
    if count == 0:
        raise InvalidInput("no questions to score")
    return {"exact_match": 100.0 * em_total / count, "f1": 100.0 * f1_total / count, "questions": count}


@dataclass(frozen=True)
class SquadQuestion:
    """One question with its own paragraph and gold answers."""

    id: str
    question: str
    context: str
    answers: tuple[str, ...]
    answer_starts: tuple[int, ...]
    title: str
    article: int
    paragraph: int


def load_squad_json(path: str | Path) -> dict[str, Any]:
    """The raw SQuAD document from a `.json` or `.json.gz` file."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"no SQuAD file at {path}")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
        data: dict[str, Any] = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{path} is not SQuAD JSON: {not_utf8(exc)}") from exc
    except (OSError, EOFError, json.JSONDecodeError) as exc:  # EOFError: a truncated .gz
        raise InvalidInput(f"{path} is not SQuAD JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise InvalidInput(f"{path} is not SQuAD JSON: no top-level 'data' list")
    return data


def read_squad(
    path: str | Path, paragraphs_per_article: int | None = None, limit: int | None = None
) -> list[SquadQuestion]:
    """Questions in file order; optionally only the first paragraphs of each article, then the first `limit`."""
    out: list[SquadQuestion] = []
    for a, article in enumerate(load_squad_json(path)["data"]):
        paragraphs = article.get("paragraphs", [])
        if paragraphs_per_article is not None:
            paragraphs = paragraphs[:paragraphs_per_article]
        for p, paragraph in enumerate(paragraphs):
            for qa in paragraph.get("qas", []):
                answers = qa.get("answers", [])
                out.append(
                    SquadQuestion(
                        id=str(qa["id"]),
                        question=qa["question"],
                        context=paragraph["context"],
                        answers=tuple(x["text"] for x in answers),
                        answer_starts=tuple(int(x["answer_start"]) for x in answers),
                        title=article.get("title", ""),
                        article=a,
                        paragraph=p,
                    )
                )
                if limit is not None and len(out) >= limit:
                    return out
    return out


def evaluate_reader(reader: Any, questions: Sequence[SquadQuestion], chunk: int = 32, show_progress: bool = False) -> dict[str, Any]:
    """EM/F1 (0-100) of `reader` reading each question against its own gold paragraph.

    `reader` is anything with `read_batch([(question, [context])]) -> [[Span]]`, such as
    `rag.reader.ExtractiveReader`; questions go in chunks so the progress bar moves.
    """
    import time

    from ingest.progress import progress_bar

    if not questions:
        raise InvalidInput("no questions to evaluate")
    predictions: dict[str, str] = {}
    bar = progress_bar(len(questions), "question", "reading", enabled=show_progress)
    started = time.perf_counter()
    try:
        for i in range(0, len(questions), chunk):
            part = questions[i : i + chunk]
            spans = reader.read_batch([(q.question, [q.context]) for q in part])
            for q, (span,) in zip(part, spans):
                # SQuAD v1.1 questions all have an answer in their paragraph: score the best span
                # even where the abstention rule would have said "not in the sources"
                predictions[q.id] = span.proposal
            bar.update(len(part))
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    result: dict[str, Any] = dict(score_predictions(predictions, questions))
    result.update(seconds=round(seconds, 3), questions_per_second=round(len(questions) / seconds, 2) if seconds else None)
    return result
