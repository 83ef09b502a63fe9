"""The support judge (the shipped ONNX cross-encoder, its calibrated threshold and the guards kept) on
real pairs: the calibration file is what sets it, the hand-written cases of
examples/verification-written.jsonl, and floors on the held-out test part of the verification sets
(SQuAD dev articles 13-24, odd SciFact claim ids), on which nothing was chosen."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from indexes.errors import InvalidInput
from rag.citations import check_answer
from rag.evaluation.verification_sets import build_set, part_of
from rag.evaluation.verifiers import judge_cases, rates, read_cases, verdict
from rag.settings import Settings
from rag.shipped import VERIFIER
from rag.verifiers import build_verifier
from rag.verifiers.judge import CALIBRATION_FILE, GUARDS, Calibration
from rag.verifiers.nli import NLIVerifier
from tests.conftest import DATA, REPO

WRITTEN = read_cases(REPO / "examples" / "verification-written.jsonl")
SHIPPED = json.loads(CALIBRATION_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def judge(tmp_path_factory: pytest.TempPathFactory) -> NLIVerifier:
    chosen = build_verifier(Settings(home=tmp_path_factory.mktemp("judge")), lambda: None)  # the shipped ONNX judge
    assert isinstance(chosen, NLIVerifier)
    return chosen


def test_auto_the_default_is_the_judge_at_the_threshold_and_guards_of_the_shipped_calibration(judge: NLIVerifier) -> None:
    assert judge.name == "nli" and judge.note == "auto: the configured support judge"
    assert judge.threshold == SHIPPED["threshold"] and list(judge.guards) == SHIPPED["guards"]


def test_the_threshold_and_guards_are_read_from_the_calibration_file(tmp_path: Path) -> None:
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({"model": VERIFIER, "threshold": 0.875, "guards": ["number"]}), encoding="utf-8")
    chosen = build_verifier(Settings(home=tmp_path, verifier_calibration=path), lambda: None)
    assert isinstance(chosen, NLIVerifier) and chosen.threshold == 0.875 and chosen.guards == ("number",)
    # a setting still wins over the file
    forced = build_verifier(
        Settings(home=tmp_path, verifier_calibration=path, verifier_threshold=0.25, verifier_guards="none"),
        lambda: None,
    )
    assert isinstance(forced, NLIVerifier) and forced.threshold == 0.25 and forced.guards == ()


def test_a_calibration_made_for_another_model_is_not_applied_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"model": "hhem-2.1-open", "threshold": 0.9, "guards": []}), encoding="utf-8")
    chosen = build_verifier(Settings(home=tmp_path, verifier="nli", verifier_calibration=path), lambda: None)
    assert isinstance(chosen, NLIVerifier) and chosen.threshold == 0.5 and chosen.guards == GUARDS
    assert "calibrates hhem-2.1-open, not this model" in chosen.note


def test_a_broken_calibration_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"model": "x", "threshold": 2, "guards": []}', encoding="utf-8")
    with pytest.raises(InvalidInput, match="threshold must be in"):
        Calibration.read(bad)
    with pytest.raises(InvalidInput, match="no verifier calibration file"):
        Calibration.read(tmp_path / "missing.json")


# Known misses of the shipped judge at its calibrated threshold (docs/judge.md): strict, so a
# better judge or guard that fixes one makes the test say so.
KNOWN_MISSES = {
    "w-born-where": "paraphrase 'birthplace was' scores under the threshold",
    "w-raducanu-sentence": "paraphrase scores under the threshold",
    "w-rhine-source": "'begins in' for 'flows from' scores under the threshold",
    "w-active-designed": "an active sentence against a passive passage scores 0.78, under 0.8",
    "w-raducanu-passive": "a passive sentence against an active passage scores 0.74, under 0.8",
    "w-passive-swap": "roles swapped across a passive: the name-order guard sees 'by' on both sides",
    "w-rhine-reverse": "from/to swapped: not names on either side of a verb",
    "w-halley-swap": "who persuaded whom: the names share one side of the verb",
    "w-amazon-city": "Seattle for Bellevue, Washington scores 0.84 (the names guard, which catches it, costs more than it saves)",
}


# Cases the judge scores within 0.005 of its threshold, where the CPU's kernels decide the verdict
# (int8 weights, fp32 compute: AVX-512/AMX and AVX2 round differently): 'w-passive-supervised'
# scored >= 0.8 on an AMX Xeon and 0.7969 on an AVX2-only EPYC. For these the test asserts the
# score sits at the threshold, which a changed model or calibration still fails.
AT_THRESHOLD = {"w-passive-supervised"}


def _support(case: Any, judge: NLIVerifier) -> float:
    answer = check_answer(case.question, case.answer, [case.as_passage()], verifier=judge)
    return max(float(s["support"]) for s in answer.details["sentences"])


def _cases(kinds: tuple[str, ...]) -> list[object]:
    return [
        pytest.param(c, id=c.id, marks=pytest.mark.xfail(strict=True, reason=KNOWN_MISSES[c.id])) if c.id in KNOWN_MISSES else pytest.param(c, id=c.id)
        for c in WRITTEN
        if c.kind in kinds
    ]


@pytest.mark.parametrize("case", _cases(("paraphrase", "passive", "pronoun", "pronoun-year", "sentence-year")))
def test_supported_paraphrases_passives_pronouns_and_years_are_verified(judge: NLIVerifier, case) -> None:  # type: ignore[no-untyped-def]
    if case.id in AT_THRESHOLD:
        assert case.label and abs(_support(case, judge) - judge.threshold) <= 0.005
        return
    assert case.label and verdict(case, judge)


@pytest.mark.parametrize("case", _cases(("name-swap", "number", "negation", "wrong-passage", "swap-answer", "swap-sentence", "qualifier")))
def test_name_swaps_numbers_negations_and_answers_from_the_wrong_passage_are_rejected(judge: NLIVerifier, case) -> None:  # type: ignore[no-untyped-def]
    assert not case.label and not verdict(case, judge)


def test_the_sets_split_by_article_and_claim_id_and_keep_their_parts_apart() -> None:
    test = build_set(DATA, ["squad", "scifact", "written"], "test", per_kind=20)
    design = build_set(DATA, ["squad", "scifact", "written"], "design", per_kind=20)
    assert {part_of(c) for c in test} == {"test"} and {part_of(c) for c in design} == {"design"}
    assert not {c.passage for c in test if c.source.startswith("squad")} & {c.passage for c in design if c.source.startswith("squad")}
    assert not {c.answer for c in test if c.source.startswith("scifact")} & {c.answer for c in design if c.source.startswith("scifact")}
    train = build_set(DATA, ["scifact"], "train")  # what `rag train-verifier --scifact` learns from
    assert train and not {c.answer for c in train} & {c.answer for c in test + design if c.source.startswith("scifact")}


def test_the_judge_meets_its_floors_on_the_held_out_test_part(judge: NLIVerifier) -> None:
    """Floors a little under what docs/judge.md reports on the full test part, on a sample of it."""
    cases = build_set(DATA, ["squad", "scifact"], "test", per_kind=40)
    judged = judge_cases(judge.probabilities, cases)
    guards = frozenset(judge.guards)
    later = ("swap-near-answer", "swap-paragraph-answer")  # kinds added after the judge was calibrated
    result = rates([j for j in judged if j.case.kind not in later], judge.threshold, guards)
    assert result["supported"] >= 150 and result["unsupported"] >= 300
    assert result["supported_verified"] >= FLOOR_SUPPORTED and result["unsupported_verified"] <= CEILING_UNSUPPORTED, result
    # Its known weakness, measured after it was calibrated: another name of the answer's sentence
    # ("who won? Leylah Fernandez" when "Emma Raducanu defeated Leylah Fernandez") is verified
    # about half the time (docs/judge.md); this guards it from getting worse.
    near = rates([j for j in judged if j.case.kind == "swap-near-answer"], judge.threshold, guards)
    assert near["unsupported"] == 40 and near["unsupported_verified"] <= CEILING_NEAR_NAMES, near


FLOOR_SUPPORTED = 0.45  # this sample: 0.505; the full test part: 0.501 (docs/judge.md)
CEILING_UNSUPPORTED = 0.03  # this sample: 0.006; the full test part: 0.021 (both without swap-near-answer)
CEILING_NEAR_NAMES = 0.65  # the full test part: 0.55


def test_a_short_answer_is_judged_the_same_with_or_without_its_full_stop(judge: NLIVerifier) -> None:
    """The judge was trained on "question answer." claims; a span without the stop scored 0.74
    where the same claim with it scored 0.99 (the issue's Raducanu example)."""
    from indexes.types import Passage

    text = "Emma Raducanu defeated Leylah Fernandez in the final to win the women's singles title at the 2021 US Open."
    passage = Passage(
        chunk_id=1, doc_id=1, text=text, start=0, end=len(text), ordinal=0, source="open.txt", title="2021 US Open",
        external_id=None, score=1.0, rank=1,
    )
    question = "Who won the women's singles U.S. Open in 2021?"
    bare, stopped = (judge.judgements(question, [answer], [passage])[0][0] for answer in ("Emma Raducanu", "Emma Raducanu."))
    assert bare.probability == stopped.probability and bare.evidence.supported and stopped.evidence.supported
