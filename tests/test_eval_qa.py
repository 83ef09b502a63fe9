"""Scoring of `rag eval qa` on hand-built answers: top-k accuracy, EM/F1 without citation markers,
citation precision, verified-answer rate, and the evenly spread question sample."""

from __future__ import annotations

import json
from pathlib import Path

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
    assert spread(questions, 0) == []  # `--limit-answerable 0`: ask only the unanswerable questions


# -- grounding: the unanswerable set, its scores and the threshold curve ------------------------------

def test_the_grounding_set_removes_paragraphs_and_keeps_only_truly_unanswerable_questions() -> None:
    from rag.evaluation.grounding import build_grounding_set
    from rag.evaluation.squad import normalize_answer
    from tests.conftest import SQUAD_DEV

    data = build_grounding_set(SQUAD_DEV, remove=10, seed=3, articles=3)
    kept = [p["context"] for a in data.corpus["data"] for p in a["paragraphs"]]
    indexed = " " + " ".join(normalize_answer(c) for c in kept) + " "
    assert data.removed_paragraphs == 10 and data.unanswerable and data.answerable
    for q in data.unanswerable:
        assert q.context not in kept
        assert not any(f" {normalize_answer(g)} " in indexed for g in q.answers)
    assert all(q.context in kept for q in data.answerable)
    # the same seed removes the same paragraphs; another seed, others
    assert build_grounding_set(SQUAD_DEV, remove=10, seed=3, articles=3).corpus == data.corpus
    assert build_grounding_set(SQUAD_DEV, remove=10, seed=4, articles=3).corpus != data.corpus


def test_a_grounding_set_that_would_remove_every_paragraph_or_a_negative_number_is_refused() -> None:
    """Said before anything is indexed, not as "no text could be extracted" from an empty corpus."""
    import pytest

    from indexes.errors import InvalidInput
    from rag.evaluation.grounding import build_grounding_set
    from tests.conftest import SQUAD_DEV

    paragraphs = len(build_grounding_set(SQUAD_DEV, remove=0, articles=1).corpus["data"][0]["paragraphs"])
    with pytest.raises(InvalidInput, match=f"--remove {paragraphs} leaves no paragraph to index"):
        build_grounding_set(SQUAD_DEV, remove=paragraphs, articles=1)
    with pytest.raises(InvalidInput, match="--remove must be 0 or more"):
        build_grounding_set(SQUAD_DEV, remove=-5, articles=1)
    assert build_grounding_set(SQUAD_DEV, remove=paragraphs - 1, articles=1).removed_paragraphs == paragraphs - 1


def test_grounding_scores_count_abstention_crag_and_verified_citation_precision() -> None:
    from rag.evaluation.grounding import GroundingRecord, score_grounding

    warsaw = passage("Marie Curie was born in Warsaw.")
    paris = passage("Pierre Curie was born in Paris.")
    q_ok = SquadQuestion(
        id="a", question="Where was Marie Curie born?", context="Marie Curie was born in Warsaw.", answers=("Warsaw",), answer_starts=(24,),
        title="t", article=0, paragraph=0,
    )
    q_no = SquadQuestion(
        id="u", question="Where was Maria born?", context="Maria was born in Lyon.", answers=("Lyon",), answer_starts=(18,),
        title="t", article=0, paragraph=1,
    )
    records = [
        GroundingRecord(q_ok, True, Answer("Warsaw", "extractive", [citation(1, True)], [warsaw])),  # right: +1
        GroundingRecord(q_ok, True, Answer("Paris", "extractive", [citation(1, True)], [paris])),  # wrong: -1, imprecise citation
        GroundingRecord(q_ok, True, Answer("Not in the sources.", "extractive", [], [warsaw], found=False)),  # abstained: 0
        GroundingRecord(q_no, False, Answer("Not in the sources.", "extractive", [], [paris], found=False)),  # abstained: 0
        GroundingRecord(q_no, False, Answer("Paris", "extractive", [citation(1, True)], [paris])),  # answered: -1
    ]
    result = score_grounding(records)
    assert (result["answerable"], result["unanswerable"]) == (3, 2)
    assert result["abstention_unanswerable"] == 0.5
    assert result["answered_answerable"] == round(2 / 3, 4)
    assert result["em_answerable"] == round(100 / 3, 2) and result["em_answered"] == 50.0
    assert result["crag_score"] == round((1 - 1 + 0 + 0 - 1) / 5, 4)
    assert result["verified_citations"] == 3 and result["verified_citation_precision"] == round(1 / 3, 4)
    assert result["unanswerable_with_verified_sentence"] == 0.5
    record = records[0].to_dict()
    assert {"question", "gold", "prediction", "confidence", "found", "correct"} <= set(record) and record["correct"] is True


def test_the_threshold_curve_replays_the_readers_decision_at_each_threshold_and_weight() -> None:
    from rag.evaluation.grounding import threshold_curve

    def candidate(text: str, margin: float, retrieval: float, suspicious: bool = False) -> dict:
        return {"n": 1, "text": text, "margin": margin, "retrieval_score": retrieval, "suspicious": suspicious}

    records = [
        # retrieval z-scores: Warsaw +1, Paris -1
        {"answerable": True, "gold": ["Warsaw"], "candidates": [candidate("Warsaw", 3.0, 0.9), candidate("Paris", 4.0, 0.1)]},
        {"answerable": False, "gold": ["Lyon"], "candidates": [candidate("Berlin", 9.0, 0.9, suspicious=True), candidate("Paris", -2.0, 0.1)]},
    ]
    low, middle, high = threshold_curve(records, [-4.0, 2.0, 4.5])
    # weight 0: the highest margin wins (Paris, wrong); at -4 the unanswerable one says Paris (Berlin is suspicious)
    assert (low["answered_answerable"], low["em_answerable"], low["abstention_unanswerable"], low["crag_score"]) == (1.0, 0.0, 0.0, -1.0)
    assert (middle["answered_answerable"], middle["abstention_unanswerable"], middle["crag_score"]) == (1.0, 1.0, -0.5)
    assert (high["answered_answerable"], high["abstention_unanswerable"], high["crag_score"]) == (0.0, 1.0, 0.0)
    # weight 2: Warsaw's value is 3 + 2 = 5 against Paris' 4 - 2 = 2, so Warsaw wins and passes 4.5
    (weighted,) = threshold_curve(records, [4.5], weight=2.0)
    assert (weighted["em_answerable"], weighted["abstention_unanswerable"], weighted["crag_score"]) == (100.0, 1.0, 0.5)


def test_grounding_replay_chooses_threshold_and_weight_on_calibration_articles_only(tmp_path: Path) -> None:
    """`rag eval grounding-replay`: the pair maximising min(abstention, answered) on article 0, scored on article 1."""
    from tests.conftest import invoke

    def record(article: int, answerable: bool, gold: str, *candidates: tuple[str, float, float]) -> dict:
        return {
            "article": article, "answerable": answerable, "gold": [gold],
            "candidates": [{"n": i, "text": t, "margin": m, "retrieval_score": r, "suspicious": False} for i, (t, m, r) in enumerate(candidates, 1)],
        }

    rows = [
        # article 0: the right passage is ranked first but read less confidently; weight >= 1 picks it
        record(0, True, "Warsaw", ("Warsaw", 6.0, 0.9), ("Paris", 6.5, 0.1)),
        record(0, False, "Lyon", ("Berlin", 2.0, 0.5), ("Rome", 1.0, 0.4)),
        record(1, True, "Oslo", ("Oslo", 8.0, 0.9), ("Bergen", 1.0, 0.2)),
        record(1, False, "Nice", ("Lille", 9.0, 0.6), ("Metz", 0.0, 0.5)),
    ]
    path = tmp_path / "records.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    result = invoke("eval", "grounding-replay", str(path), "--calibrate-articles", "1", "--json", home=tmp_path / "home")
    assert result.returncode == 0, result.stderr
    calibration = json.loads(result.stdout)["calibration"]
    chosen = calibration["chosen"]
    assert (chosen["abstention_unanswerable"], chosen["answered_answerable"], chosen["em_answerable"]) == (1.0, 1.0, 100.0)
    assert chosen["retrieval_weight"] >= 1.0 and calibration["calibration_questions"] == 2
    # the unanswerable held-out question's distractor (margin 9 + weight) beats any threshold article 0 allows
    assert calibration["held_out"]["abstention_unanswerable"] == 0.0
    assert calibration["held_out"]["answered_answerable"] == 1.0


def test_grounding_replay_refuses_a_file_without_records(tmp_path: Path) -> None:
    from tests.conftest import invoke

    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"crag_score": 0.1}), encoding="utf-8")
    result = invoke("eval", "grounding-replay", str(path), home=tmp_path / "home")
    assert result.returncode != 0 and "records" in result.stderr
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    result = invoke("eval", "grounding-replay", str(empty), home=tmp_path / "home")
    assert result.returncode == 1 and "no records" in result.stderr
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"article": 0, "gold": ["caf\xe9"]}\n')
    result = invoke("eval", "grounding-replay", str(latin), home=tmp_path / "home")
    assert result.returncode == 1 and "latin.jsonl: not valid UTF-8 (byte 0xe9 at offset 28)" in result.stderr
    # generative records keep no candidates to replay; a record that is not an object is no record
    for records, message in (
        ([{"article": 0, "answerable": True, "gold": ["x"], "generated": "X [1]."}], "record 1 has no 'candidates'"),
        ([{"article": 0, "answerable": True, "gold": ["x"], "candidates": []}, 7], "record 2 is not an object"),
        ([{"article": 0, "candidates": []}], "record 1 has no 'answerable'"),
        (
            [
                {"id": "q9", "article": 0, "answerable": True, "gold": ["x"], "candidates": [{"text": "x", "suspicious": False}]},
                {"id": "q10", "article": 0, "answerable": False, "gold": ["y"], "candidates": []},
            ],
            "a candidate of question 'q9' lacks 'margin'",
        ),
    ):
        path = tmp_path / "bad-records.json"
        path.write_text(json.dumps({"records": records}), encoding="utf-8")
        result = invoke("eval", "grounding-replay", str(path), home=tmp_path / "home")
        assert result.returncode == 1 and message in result.stderr, result.stderr


def test_grounding_replay_refuses_to_calibrate_on_articles_without_both_kinds_of_question(tmp_path: Path) -> None:
    """A threshold chosen on no unanswerable (or no answerable) question is no choice: say so."""
    from tests.conftest import invoke

    rows = [
        {
            "article": 0, "answerable": True, "gold": ["Oslo"],
            "candidates": [{"n": 1, "text": "Oslo", "margin": 8.0, "retrieval_score": 0.9, "suspicious": False}],
        },
        {
            "article": 1, "answerable": False, "gold": ["Nice"],
            "candidates": [{"n": 1, "text": "Lille", "margin": 9.0, "retrieval_score": 0.6, "suspicious": False}],
        },
    ]
    path = tmp_path / "records.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    result = invoke("eval", "grounding-replay", str(path), "--calibrate-articles", "1", home=tmp_path / "home")
    assert result.returncode == 1
    assert "articles < 1 hold 1 answerable and 0 unanswerable questions" in result.stderr


def test_a_recorded_grounding_run_replays_to_its_own_scores_and_names_no_threshold_when_off(tmp_path: Path) -> None:
    """`rag eval grounding` end to end on one article with the abstaining reader, abstention off (how
    the calibration runs are recorded): no threshold is reported, and replaying the records with the
    reader's own rule and no threshold gives the run's own EM."""
    from rag.evaluation.grounding import threshold_curve
    from rag.reader import DEFAULT_RETRIEVAL_WEIGHT
    from tests.conftest import NA_READER_MODEL, SQUAD_DEV, invoke

    env = {"RAG_READER_MODEL": str(NA_READER_MODEL), "RAG_READER_ABSTENTION": "off", "HF_HUB_OFFLINE": "1"}
    args = ("eval", "grounding", "--squad", str(SQUAD_DEV), "--articles", "1", "--remove", "8", "--limit", "6")
    result = invoke(*args, "--mode", "extractive", "--json", home=tmp_path / "home", env=env)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["abstention"] == "off" and summary["threshold"] is None
    assert (summary["answerable"], summary["unanswerable"]) == (6, 6)
    assert (summary["abstention_unanswerable"], summary["answered_answerable"]) == (0.0, 1.0)
    records = summary["records"]
    assert all(len(r["candidates"]) == 5 for r in records)
    replayed = threshold_curve(records, [None], "margin", DEFAULT_RETRIEVAL_WEIGHT)[0]
    assert replayed["em_answerable"] == summary["em_answerable"]
    assert replayed["answered_answerable"] == 1.0


def _gate_row(question: str, prediction: str, passage: str, answerable: bool, found: bool = True) -> dict[str, object]:
    return {
        "id": question, "article": 13, "question": question, "answerable": answerable, "gold": ["Warsaw"] if answerable else [],
        "prediction": prediction, "found": found, "correct": answerable and prediction == "Warsaw", "candidates": [],
        "gold_sentence": passage if answerable else "", "passages": [{"title": "Curie", "text": passage}], "cited": 1 if found else None,
    }


def test_the_guided_gate_replay_counts_what_the_check_lets_through(tmp_path: Path) -> None:
    from rag.evaluation.grounding import guided_gate
    from rag.verifiers.lexical import LexicalVerifier

    rows = [
        _gate_row("Where was Marie Curie born?", "Warsaw", "Marie Curie was born in Warsaw in 1867.", True),
        _gate_row("Where was Marie Curie born?", "Warsaw", "Marie Curie was born in Warsaw in 1867.", True, found=False),  # abstained
        _gate_row("Who designed the Sydney Opera House?", "Paris", "Pierre Curie was born in Paris in 1859.", False),
    ]
    result = guided_gate(rows, LexicalVerifier(), lexical_fallback=False)
    assert (result["answerable"], result["unanswerable"], result["reader_answered"]) == (2, 1, 1)
    assert (result["passed_answerable"], result["passed_correct"], result["passed_unanswerable"]) == (1, 1, 0)
    assert (result["answered_rate"], result["unanswerable_verified_rate"], result["citation_precision"]) == (0.5, 0.0, 1.0)


def test_the_guided_gate_command_refuses_records_without_passages(tmp_path: Path) -> None:
    from tests.conftest import invoke

    old = tmp_path / "old.jsonl"
    row = _gate_row("Where was Marie Curie born?", "Warsaw", "Marie Curie was born in Warsaw.", True)
    del row["passages"]
    old.write_text(json.dumps(row) + "\n", encoding="utf-8")
    result = invoke("eval", "guided-gate", str(old), home=tmp_path)
    assert result.returncode == 1 and "records need 'passages' and 'cited'" in result.stderr, result.stderr
