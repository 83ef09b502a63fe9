"""Does the system say "not in the sources" when that is true, and are its verified citations right?

The labelled set comes from a SQuAD file (`build_grounding_set`): a seeded random sample of
paragraphs is removed from the corpus; questions of removed paragraphs whose gold answers appear
nowhere in the indexed text are *unanswerable*; questions of kept paragraphs are *answerable*.

Scores (`score_grounding`):
- abstention on unanswerable questions, answered rate on answerable ones;
- EM/F1 on answerable questions (abstaining scores 0) and on those answered;
- CRAG-style score: +1 right, 0 abstained, -1 wrong, averaged over all questions. "Right" means
  the prediction contains a gold answer as whole words after SQuAD normalisation (extractive
  spans and generated sentences alike);
- citation precision: of the verified citations, the share whose cited passage contains a gold
  answer or the gold sentence (any verified citation on an unanswerable question is wrong);
- how often an unanswerable question gets a verified sentence (should be 0).

Every question's record (question, golds, prediction, confidence, found, correct, and for
extractive answers each passage's candidate span and margin) is kept, so the trade-off between
answered rate and accuracy can be replayed at any threshold (`threshold_curve`).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from indexes.errors import InvalidInput
from indexes.types import Passage
from rag.answer import Answer
from rag.evaluation.files import read_utf8
from rag.evaluation.qa import contains_answer, prediction_text
from rag.evaluation.squad import SquadQuestion, best_over_golds, load_squad_json, normalize_answer


@dataclass(frozen=True)
class GroundingSet:
    corpus: dict[str, Any]  # the SQuAD document of kept paragraphs (what gets indexed)
    answerable: list[SquadQuestion]
    unanswerable: list[SquadQuestion]
    removed_paragraphs: int
    dropped_questions: int  # questions of removed paragraphs whose answer is still somewhere in the corpus


def _questions(article: int, paragraph: int, title: str, par: dict[str, Any]) -> list[SquadQuestion]:
    out = []
    for qa in par.get("qas", []):
        answers = qa.get("answers", [])
        if not answers:
            continue
        out.append(
            SquadQuestion(
                id=str(qa["id"]),
                question=qa["question"],
                context=par["context"],
                answers=tuple(a["text"] for a in answers),
                answer_starts=tuple(int(a["answer_start"]) for a in answers),
                title=title,
                article=article,
                paragraph=paragraph,
            )
        )
    return out


def build_grounding_set(path: str | Path, remove: int, seed: int = 0, articles: int | None = None) -> GroundingSet:
    """Remove `remove` random paragraphs (seeded) from the SQuAD file (its first `articles` articles)."""
    data = load_squad_json(path)["data"][:articles]
    paragraphs = [(a, p) for a, article in enumerate(data) for p in range(len(article.get("paragraphs", [])))]
    if remove < 0:
        raise InvalidInput(f"--remove must be 0 or more (got {remove})")
    if remove >= len(paragraphs):
        raise InvalidInput(
            f"--remove {remove} leaves no paragraph to index: {path} has {len(paragraphs)} paragraph{'' if len(paragraphs) == 1 else 's'}"
            + (f" in its first {articles} articles" if articles else "")
        )
    removed = set(random.Random(seed).sample(paragraphs, remove))
    kept_text = " ".join(
        normalize_answer(data[a]["paragraphs"][p]["context"]) for a, p in paragraphs if (a, p) not in removed
    )
    haystack = f" {kept_text} "
    corpus: dict[str, Any] = {"version": "grounding", "data": []}
    answerable: list[SquadQuestion] = []
    unanswerable: list[SquadQuestion] = []
    dropped = 0
    for a, article in enumerate(data):
        title = article.get("title", "")
        kept = []
        for p, par in enumerate(article.get("paragraphs", [])):
            questions = _questions(a, p, title, par)
            if (a, p) in removed:
                for q in questions:
                    if any(f" {normalize_answer(g)} " in haystack for g in q.answers if normalize_answer(g)):
                        dropped += 1
                    else:
                        unanswerable.append(q)
            else:
                kept.append({"context": par["context"], "qas": []})
                answerable.extend(questions)
        corpus["data"].append({"title": title, "paragraphs": kept})
    return GroundingSet(corpus, answerable, unanswerable, len(removed), dropped)


def gold_sentence(question: SquadQuestion) -> str:
    """The sentence of the gold paragraph that holds the first gold answer."""
    import blingfire

    _, offsets = blingfire.text_to_sentences_and_offsets(question.context)
    at = question.answer_starts[0] if question.answer_starts else 0
    for start, end in offsets:
        if start <= at < end:
            return question.context[start:end]
    return question.context


def holds_gold(text: str, answers: Sequence[str], sentence: str) -> bool:
    """Whether a cited passage is a correct citation: it holds a gold answer or the gold sentence."""
    normal = normalize_answer(sentence)
    return contains_answer(text, answers) or bool(normal and normal in normalize_answer(text))


def passages_of(row: dict[str, Any]) -> list[Passage]:
    """The passages a record keeps (`passages`: title and text), as the check reads them."""
    return [
        Passage(chunk_id=i, doc_id=i, text=p["text"], start=0, end=len(p["text"]), ordinal=0, source=f"p{i}",
                title=p.get("title") or "", external_id=None, score=1.0, rank=i)
        for i, p in enumerate(row.get("passages") or [], start=1)
    ]


@dataclass(frozen=True)
class GroundingRecord:
    question: SquadQuestion
    answerable: bool
    answer: Answer

    def verified_citations(self) -> list[tuple[int, bool]]:
        """(n, correct) of each verified citation: its passage holds a gold answer or the gold sentence."""
        sentence = gold_sentence(self.question)
        out = []
        for c in self.answer.citations:
            if not c.verified:
                continue
            text = self.answer.passages[c.n - 1].text if 0 < c.n <= len(self.answer.passages) else c.text
            out.append((c.n, self.answerable and holds_gold(text, self.question.answers, sentence)))
        return out

    def correct(self) -> bool:
        return self.answer.found and contains_answer(prediction_text(self.answer), self.question.answers)

    def to_dict(self) -> dict[str, Any]:
        prediction = prediction_text(self.answer)
        em, f1 = best_over_golds(prediction, self.question.answers)
        details = self.answer.details
        record: dict[str, Any] = {
            "id": self.question.id,
            "article": self.question.article,
            "question": self.question.question,
            "answerable": self.answerable,
            "gold": list(self.question.answers),
            "prediction": prediction,
            "found": self.answer.found,
            "correct": self.correct() if self.answerable else False,
            "em": em if self.answerable else 0.0,
            "f1": f1 if self.answerable else 0.0,
            "confidence": details.get("margin", self.answer.score),
            "score": self.answer.score,
            "verified_citations": [{"n": n, "correct": ok} for n, ok in self.verified_citations()],
            "verified_sentences": sum(1 for s in details.get("sentences", []) if s.get("supported")),
            "reason": details.get("reason"),
            "fallback": details.get("fallback"),
            "total_ms": self.answer.timings.get("total_ms"),
            "gold_sentence": gold_sentence(self.question),
        }
        if "candidates" in details:
            record["candidates"] = details["candidates"]
        if "generated" in details:
            record["generated"] = details["generated"]
        # the passages read and the one cited first: enough to re-check the answer with another
        # verifier (`rag eval guided-gate` replays the reader-guided gate on extractive records)
        record["passages"] = [{"title": p.title, "text": p.text} for p in self.answer.passages]
        record["cited"] = self.answer.citations[0].n if self.answer.citations else None
        return record


def score_grounding(records: Sequence[GroundingRecord]) -> dict[str, Any]:
    answerable = [r for r in records if r.answerable]
    unanswerable = [r for r in records if not r.answerable]
    answered = [r for r in answerable if r.answer.found]
    scores = [best_over_golds(prediction_text(r.answer), r.question.answers) for r in answerable]
    answered_scores = [best_over_golds(prediction_text(r.answer), r.question.answers) for r in answered]
    crag = [(1 if r.correct() else -1) if r.answer.found and r.answerable else (-1 if r.answer.found else 0) for r in records]
    verified = [ok for r in records for _, ok in r.verified_citations()]

    def mean(values: Sequence[float], scale: float = 1.0, digits: int = 4) -> float | None:
        return round(scale * float(np.mean(values)), digits) if len(values) else None

    return {
        "answerable": len(answerable),
        "unanswerable": len(unanswerable),
        "abstention_unanswerable": mean([not r.answer.found for r in unanswerable]),
        "answered_answerable": mean([r.answer.found for r in answerable]),
        "em_answerable": mean([em for em, _ in scores], 100, 2),
        "f1_answerable": mean([f1 for _, f1 in scores], 100, 2),
        "em_answered": mean([em for em, _ in answered_scores], 100, 2),
        "f1_answered": mean([f1 for _, f1 in answered_scores], 100, 2),
        "accuracy_answered": mean([r.correct() for r in answered]),
        "crag_score": mean(crag),
        "verified_citations": len(verified),
        "verified_citation_precision": mean(verified),
        "unanswerable_with_verified_sentence": mean(
            [any(True for _ in r.verified_citations()) for r in unanswerable]
        ),
        # generative: an answer a user can check (a verified citation), on questions the sources answer
        "answerable_with_verified_citation": mean([any(True for _ in r.verified_citations()) for r in answerable]),
        "answerable_with_correct_verified_citation": mean([any(ok for _, ok in r.verified_citations()) for r in answerable]),
        "reader_span_fallbacks": sum(1 for r in records if r.answer.details.get("fallback")),
        "latency_p50_ms": median_or_none([r.answer.timings["total_ms"] for r in records if "total_ms" in r.answer.timings]),
    }


def median_or_none(values: Sequence[float]) -> float | None:
    """The median, or None for no values."""
    return round(float(np.median(values)), 1) if len(values) else None


def threshold_curve(
    records: Sequence[dict[str, Any]], thresholds: Sequence[float], key: str = "margin", weight: float = 0.0
) -> list[dict[str, Any]]:
    """Replay extractive records at other thresholds and retrieval weights with the reader's own rule
    (`rag.reader.choose_passage`): each candidate's value is its `key` ("margin" for abstention=null,
    "span_logit" for abstention=span) plus `weight` x its standardised retrieval score; the answer is
    the allowed candidate of highest value when that value beats the threshold."""
    from rag.reader import choose_passage, standardised

    decided = []
    for r in records:
        candidates = r.get("candidates", [])
        if weight and candidates and any("retrieval_score" not in c for c in candidates):
            raise InvalidInput("these records have no retrieval scores (recorded before they were kept); replay at weight 0")
        if any(not isinstance(c, dict) or not {key, "text", "suspicious"} <= c.keys() for c in candidates):
            raise InvalidInput(f"a candidate of question {r.get('id', '?')!r} lacks {key!r}, 'text' or 'suspicious' (--key margin | span_logit)")
        z = standardised([c.get("retrieval_score", 0.0) for c in candidates])
        values = [(c[key] if c[key] is not None else float("-inf")) + weight * zi for c, zi in zip(candidates, z)]
        allowed = [bool(c["text"]) and not c["suspicious"] for c in candidates]
        decided.append((r, candidates, values, allowed))
    rows = []
    for t in thresholds:
        answered_a = n_a = abstained_u = n_u = crag = 0
        em_a = 0.0
        for r, candidates, values, allowed in decided:
            i = choose_passage(values, allowed, t)
            if r["answerable"]:
                n_a += 1
                if i is not None:
                    text = candidates[i]["text"]
                    answered_a += 1
                    em_a += best_over_golds(text, r["gold"])[0]
                    crag += 1 if contains_answer(text, r["gold"]) else -1
            else:
                n_u += 1
                abstained_u += i is None
                crag -= i is not None
        rows.append(
            {
                "threshold": t,
                "retrieval_weight": weight,
                "abstention_unanswerable": round(abstained_u / n_u, 4) if n_u else None,
                "answered_answerable": round(answered_a / n_a, 4) if n_a else None,
                "em_answerable": round(100 * em_a / n_a, 2) if n_a else None,
                "em_answered": round(100 * em_a / answered_a, 2) if answered_a else None,
                "crag_score": round(crag / (n_a + n_u), 4) if n_a + n_u else None,
            }
        )
    return rows


def evaluate_grounding(
    ask: Callable[[str], Answer],
    data: GroundingSet,
    limit_answerable: int | None = None,
    limit_unanswerable: int | None = None,
    progress: Callable[[int], None] | None = None,
    first_article: int = 0,
    on_record: Callable[[GroundingRecord], None] | None = None,
) -> tuple[dict[str, Any], list[GroundingRecord]]:
    """Ask the questions (answerable and unanswerable interleaved in proportion, so a run cut short
    still holds both kinds); `first_article` (0-based) keeps only the questions of that article and
    later ones (the corpus stays whole): held-out articles. `on_record` sees each record as it is made."""
    from rag.evaluation.qa import spread

    answerable = [q for q in data.answerable if q.article >= first_article]
    unanswerable = [q for q in data.unanswerable if q.article >= first_article]
    tagged: list[tuple[float, bool, SquadQuestion]] = []
    for label, chosen in ((True, spread(answerable, limit_answerable)), (False, spread(unanswerable, limit_unanswerable))):
        tagged.extend((i / len(chosen), not label, q) for i, q in enumerate(chosen))
    records = []
    for _, unlabelled, q in sorted(tagged, key=lambda t: (t[0], t[1])):
        is_answerable = not unlabelled
        record = GroundingRecord(q, is_answerable, ask(q.question))
        records.append(record)
        if on_record:
            on_record(record)
        if progress:
            progress(1)
    return score_grounding(records), records


def write_corpus(data: GroundingSet, folder: Path, name: str) -> Path:
    """The kept paragraphs as a SQuAD file; rewritten only when it changes (re-runs skip ingestion)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    text = json.dumps(data.corpus, ensure_ascii=False)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    return path


def choose_threshold(curve: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The calibration rule for the reader's threshold (and retrieval weight): the row that maximises
    min(abstention on unanswerable, answered rate on answerable), ties to the better CRAG score.
    The target asks for both rates at once, so the smaller of the two is what to raise; the
    earlier rule (lowest threshold abstaining on >= 90%) let answered fall to 0.68 on held-out articles."""
    return max(
        curve,
        key=lambda r: (
            min(r["abstention_unanswerable"] or 0.0, r["answered_answerable"] or 0.0),
            r["crag_score"] if r["crag_score"] is not None else -1.0,
        ),
    )


def recheck_generations(rows: Sequence[dict[str, Any]], verifier: Any) -> dict[str, Any]:
    """The grounding scores of recorded generations re-checked by another verifier: the same
    generated text and passages, so verifiers compare on equal terms without generating again."""
    from rag.citations import check_answer

    answered_a = correct_a = n_a = abstained_u = n_u = verified_u = 0
    crag = 0
    verified: list[bool] = []
    for r in rows:
        passages = passages_of(r)
        answer = check_answer(r["question"], r["generated"], passages, verifier=verifier)
        cites = [
            bool(r["answerable"]) and holds_gold(passages[c.n - 1].text, r["gold"], r["gold_sentence"])
            for c in answer.citations if c.verified
        ]
        verified.extend(cites)
        right = answer.found and contains_answer(prediction_text(answer), r["gold"])
        if r["answerable"]:
            n_a += 1
            answered_a += answer.found
            correct_a += right
            crag += (1 if right else -1) if answer.found else 0
        else:
            n_u += 1
            abstained_u += not answer.found
            verified_u += bool(cites)
            crag -= 1 if answer.found else 0
    return {
        "verifier": verifier.name,
        "abstention_unanswerable": round(abstained_u / n_u, 4) if n_u else None,
        "answered_answerable": round(answered_a / n_a, 4) if n_a else None,
        "accuracy_answered": round(correct_a / answered_a, 4) if answered_a else None,
        "crag_score": round(crag / (n_a + n_u), 4) if n_a + n_u else None,
        "verified_citations": len(verified),
        "verified_citation_precision": round(sum(verified) / len(verified), 4) if verified else None,
        "unanswerable_with_verified_sentence": round(verified_u / n_u, 4) if n_u else None,
    }


def calibrate_on_articles(
    rows: Sequence[dict[str, Any]], articles: int, grid: Sequence[float], key: str = "margin", weights: Sequence[float] = (0.0,)
) -> dict[str, Any]:
    """Choose threshold and retrieval weight on the questions of the first `articles` articles
    (`choose_threshold` over the grid x weights) and score the other articles' questions at them:
    calibration and evaluation never share questions."""
    calibration = [r for r in rows if r["article"] < articles]
    held_out = [r for r in rows if r["article"] >= articles]
    answerable = sum(bool(r["answerable"]) for r in calibration)
    if not answerable or answerable == len(calibration):
        # the rule trades one rate against the other: without both there is nothing to choose on
        raise InvalidInput(
            f"articles < {articles} hold {answerable} answerable and {len(calibration) - answerable} unanswerable "
            "questions; calibration needs both (choose another --calibrate-articles)"
        )
    chosen = choose_threshold([row for w in weights for row in threshold_curve(calibration, grid, key, w)])
    weight = chosen["retrieval_weight"]
    return {
        "calibration_articles": articles,
        "calibration_questions": len(calibration),
        "chosen": chosen,
        "held_out_questions": len(held_out),
        "held_out": threshold_curve(held_out, [chosen["threshold"]], key, weight)[0],
        "held_out_curve": threshold_curve(held_out, grid, key, weight),
    }


REPLAYED_FIELDS = ("article", "answerable", "gold", "candidates")


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Per-question extractive records from `rag eval grounding --json` output (its "records") or
    JSON lines of them, each with the fields a replay reads (`REPLAYED_FIELDS`)."""
    text = read_utf8(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        try:
            data = {"records": [json.loads(line) for line in text.splitlines() if line.strip()]}
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{path}: neither a JSON document nor JSON lines ({exc})") from exc
    if isinstance(data, dict) and "records" not in data and "question" in data:
        data = {"records": [data]}  # JSON lines holding one record parse as one JSON document
    records = data.get("records") if isinstance(data, dict) else None
    if not isinstance(records, list):
        raise InvalidInput(f"{path}: no 'records' list (expected `rag eval grounding --json` output)")
    if not records:
        raise InvalidInput(f"{path}: no records to replay")
    for number, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            raise InvalidInput(f"{path}: record {number} is not an object")
        for name in REPLAYED_FIELDS:
            if name not in record:
                raise InvalidInput(
                    f"{path}: record {number} has no {name!r}"
                    + (" (generative records keep no candidates: replay `rag eval grounding --mode extractive` output)" if "generated" in record else "")
                )
    return records


def score_records(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The headline scores from recorded rows (`--records` JSON lines, e.g. of a run cut short):
    the same definitions as `score_grounding`, read from each row's own fields."""
    answerable = [r for r in rows if r["answerable"]]
    unanswerable = [r for r in rows if not r["answerable"]]
    verified = [c["correct"] for r in rows for c in r["verified_citations"]]

    def share(values: Sequence[bool]) -> float | None:
        return round(sum(values) / len(values), 4) if values else None

    return {
        "answerable": len(answerable),
        "unanswerable": len(unanswerable),
        "abstention_unanswerable": share([not r["found"] for r in unanswerable]),
        "answered_answerable": share([r["found"] for r in answerable]),
        "em_answerable": round(100 * sum(r["em"] for r in answerable) / len(answerable), 2) if answerable else None,
        "accuracy_answered": share([r["correct"] for r in answerable if r["found"]]),
        "answerable_with_verified_citation": share([bool(r["verified_citations"]) for r in answerable]),
        "verified_citations": len(verified),
        "verified_citation_precision": share(verified),
        "unanswerable_with_verified_sentence": share([bool(r["verified_citations"]) for r in unanswerable]),
        "reader_span_fallbacks": sum(1 for r in rows if r.get("fallback")),
        "latency_p50_ms": median_or_none([r["total_ms"] for r in rows if r.get("total_ms") is not None]),
    }


def guided_gate(rows: Sequence[dict[str, Any]], verifier: Any, lexical_fallback: bool = False) -> dict[str, Any]:
    """Replay the reader-guided gate (`rag.guided.guided_answer`) on extractive records: a guided
    generative answer exists only when the reader answered and the verifier verifies "question +
    span." on the span's passage. `lexical_fallback` adds the lexical check as a second chance (the
    rule the gate had until it was measured here and removed).
    So the share of answerable questions passing it bounds the generative answered rate, and the
    share of unanswerable ones passing it is the rate of verified sentences on them."""
    from rag.guided import span_claim
    from rag.verifiers.lexical import LexicalVerifier

    lexical = LexicalVerifier() if lexical_fallback and getattr(verifier, "name", "") != "lexical" else None
    counts = {"answerable": 0, "unanswerable": 0, "passed_answerable": 0, "passed_correct": 0, "passed_unanswerable": 0,
              "cited_gold": 0, "by_lexical": 0, "reader_answered": 0}
    for row in rows:
        kind = "answerable" if row["answerable"] else "unanswerable"
        counts[kind] += 1
        n, passages = row.get("cited"), passages_of(row)
        if not row["found"] or not n or not 0 < n <= len(passages):
            continue
        counts["reader_answered"] += row["answerable"]
        claim = span_claim(row["question"], row["prediction"])
        ok = verifier.verify(row["question"], [claim], passages)[0][n - 1].supported
        if not ok and lexical is not None:
            ok = lexical.verify(row["question"], [claim], passages)[0][n - 1].supported
            counts["by_lexical"] += ok
        if not ok:
            continue
        if row["answerable"]:
            counts["passed_answerable"] += 1
            counts["passed_correct"] += bool(row["correct"])
            counts["cited_gold"] += holds_gold(passages[n - 1].text, row["gold"], row.get("gold_sentence") or "")
        else:
            counts["passed_unanswerable"] += 1
    passed = counts["passed_answerable"] + counts["passed_unanswerable"]
    return {
        **counts,
        "answered_rate": round(counts["passed_answerable"] / counts["answerable"], 4) if counts["answerable"] else None,
        "answered_correct_rate": round(counts["passed_correct"] / counts["answerable"], 4) if counts["answerable"] else None,
        "unanswerable_verified_rate": round(counts["passed_unanswerable"] / counts["unanswerable"], 4) if counts["unanswerable"] else None,
        "citation_precision": round(counts["cited_gold"] / passed, 4) if passed else None,
    }
