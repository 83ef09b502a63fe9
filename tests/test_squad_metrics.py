"""Official SQuAD v1.1 scoring on hand-computed cases, the SQuAD reader, and `rag eval reader` end to end."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from indexes.errors import InvalidInput
from rag.evaluation.squad import best_over_golds, exact_match, f1_score, normalize_answer, read_squad, score_predictions
from tests.conftest import READER_MODEL, SQUAD_DEV, run_cli


def test_normalisation_lowercases_and_drops_punctuation_articles_and_extra_spaces() -> None:
    assert normalize_answer("The  Denver Broncos!") == "denver broncos"
    assert normalize_answer("an apple, a pear") == "apple pear"
    assert normalize_answer("Theatre") == "theatre"  # 'the' only as a whole word
    assert normalize_answer("Saint-Étienne") == "saintétienne"


def test_exact_match_after_normalisation() -> None:
    assert exact_match("the Broncos.", "Broncos") == 1.0
    assert exact_match("Denver Broncos", "Broncos") == 0.0


def test_f1_is_token_overlap() -> None:
    # prediction 3 tokens, gold 2, 2 shared: P = 2/3, R = 1, F1 = 0.8
    assert f1_score("the Denver Broncos team", "Denver Broncos") == pytest.approx(0.8)
    # repeated tokens count once per occurrence in both: P = 1/3, R = 1/2, F1 = 0.4
    assert f1_score("Paris Paris London", "Paris Rome") == pytest.approx(0.4)
    assert f1_score("nothing shared", "Denver") == 0.0
    assert f1_score("", "Denver") == 0.0


def test_each_question_takes_its_best_gold_answer() -> None:
    assert best_over_golds("Denver Broncos", ["Broncos", "Denver Broncos", "Denver"]) == (1.0, 1.0)
    em, f1 = best_over_golds("Broncos of Denver", ["Denver Broncos", "the Broncos"])
    assert em == 0.0 and f1 == pytest.approx(0.8)


def _tiny_squad() -> dict[str, object]:
    paragraph = {
        "context": "My name is Michael and I live in Taipei.",
        "qas": [
            {"id": "q1", "question": "Where do I live?", "answers": [{"text": "Taipei", "answer_start": 33}]},
            {"id": "q2", "question": "What is my name?", "answers": [{"text": "Michael", "answer_start": 11}]},
        ],
    }
    return {"version": "1.1", "data": [{"title": "Me", "paragraphs": [paragraph, paragraph]}]}


def test_squad_files_read_plain_and_gzipped_with_limits(tmp_path: Path) -> None:
    plain, packed = tmp_path / "s.json", tmp_path / "s.json.gz"
    plain.write_text(json.dumps(_tiny_squad()), encoding="utf-8")
    with gzip.open(packed, "wt", encoding="utf-8") as handle:
        json.dump(_tiny_squad(), handle)
    assert read_squad(plain) == read_squad(packed)
    assert len(read_squad(plain)) == 4
    assert len(read_squad(plain, paragraphs_per_article=1)) == 2
    (first,) = read_squad(plain, limit=1)
    assert (first.id, first.answers, first.answer_starts, first.title) == ("q1", ("Taipei",), (33,), "Me")


def test_the_dev_subset_of_the_model_card_has_518_questions() -> None:
    assert len(read_squad(SQUAD_DEV, paragraphs_per_article=3)) == 518


def test_scores_are_on_a_0_to_100_scale_and_missing_predictions_score_zero(tmp_path: Path) -> None:
    plain = tmp_path / "s.json"
    plain.write_text(json.dumps(_tiny_squad()), encoding="utf-8")
    questions = read_squad(plain, paragraphs_per_article=1)
    result = score_predictions({"q1": "in Taipei"}, questions)
    assert result == {"exact_match": 0.0, "f1": pytest.approx(100 * (2 * 0.5 / 1.5) / 2), "questions": 2}


def test_not_squad_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(InvalidInput):
        read_squad(bad)
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'\xff\xfe{"data": []}')  # not UTF-8: an error that names the file, not a traceback
    with pytest.raises(InvalidInput, match="latin.json is not SQuAD JSON: not valid UTF-8"):
        read_squad(latin)
    cut = tmp_path / "cut.json.gz"
    cut.write_bytes(gzip.compress(b'{"data": []}')[:-12])  # a truncated download
    with pytest.raises(InvalidInput, match="cut.json.gz is not SQuAD JSON"):
        read_squad(cut)


def test_eval_reader_command_prints_em_and_f1_as_json(tmp_path: Path) -> None:
    result = run_cli(
        "eval", "reader", "--squad", str(SQUAD_DEV), "--model", str(READER_MODEL), "--limit", "12", "--json", home=tmp_path
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["questions"] == 12
    assert 0.0 <= report["exact_match"] <= report["f1"] <= 100.0
    assert report["f1"] > 50.0  # the shared reader is far better than chance on its first questions
    assert report["model"] == str(READER_MODEL)
