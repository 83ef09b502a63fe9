"""Scoring of `rag eval qa` on hand-built answers: top-k accuracy, EM/F1 without citation markers,
citation precision, verified-answer rate, and the evenly spread question sample."""

from __future__ import annotations

from indexes.types import Passage
from rag.answer import Answer, Citation
from rag.evaluation.qa import QARecord, contains_answer, score_qa, spread
from rag.evaluation.squad import SquadQuestion


def question(i: int, gold: str) -> SquadQuestion:
    return SquadQuestion(id=f"q{i}", question="Where?", context="", answers=(gold,), answer_starts=(0,), title="t", article=0, paragraph=i)


def passage(text: str) -> Passage:
    return Passage(chunk_id=1, doc_id=1, text=text, start=0, end=len(text), ordinal=0, source="s", title="t", external_id=None, score=1.0, rank=1)


def citation(n: int, verified: bool) -> Citation:
    return Citation(n=n, doc_id=1, chunk_id=1, source="s", title="t", start=0, end=1, chunk_start=0, chunk_end=1, text="x", verified=verified)


def test_a_passage_contains_an_answer_after_squad_normalisation_only_as_whole_words() -> None:
    assert contains_answer("He was born in Warsaw, Poland.", ["warsaw"])
    assert contains_answer("The Denver Broncos won.", ["the Denver Broncos"])
    assert not contains_answer("Warsawian pastry", ["Warsaw"])


def test_scores_count_hits_strip_markers_and_measure_citation_precision() -> None:
    warsaw, paris = passage("Marie Curie was born in Warsaw."), passage("Pierre Curie was born in Paris.")
    records = [
        QARecord(question(1, "Warsaw"), Answer("Warsaw [1].", "generative", [citation(1, True)], [warsaw, paris], timings={"total_ms": 10.0})),
        QARecord(question(2, "Warsaw"), Answer("Paris [2].", "generative", [citation(2, False)], [warsaw, paris], timings={"total_ms": 30.0})),
        QARecord(question(3, "Lyon"), Answer("The sources do not contain the answer.", "generative", [], [warsaw], found=False, timings={"total_ms": 20.0})),
    ]
    result = score_qa(records, [[p.text for p in r.answer.passages] for r in records], k=5)
    assert result["top5_accuracy"] == round(2 / 3, 4)
    assert result["exact_match"] == round(100 / 3, 2)  # "Warsaw [1]." scores as "Warsaw"
    assert result["citations"] == 2
    # [2] in the second answer cites the Paris passage, which has no gold answer and is unverified
    assert result["citation_precision"] == 0.5
    assert result["verified_answer_rate"] == round(1 / 3, 4)
    assert result["answered_rate"] == round(2 / 3, 4)
    assert result["latency_p50_ms"] == 20.0


def test_a_limited_sample_is_spread_over_the_whole_file() -> None:
    questions = [question(i, "x") for i in range(100)]
    picked = spread(questions, 4)
    assert [q.paragraph for q in picked] == [0, 25, 50, 75]
    assert spread(questions, None) == questions
