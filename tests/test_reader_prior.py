"""Choosing between passages' answers: the reader's span probability times the retriever's
passage probability (`passage_prior`)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from indexes.types import Passage
from rag.reader import DEFAULT_NULL_THRESHOLD, ExtractiveReader, passage_prior
from rag.runtime import Runtime
from rag.settings import Settings
from tests.conftest import READER_MODEL, REPO


def test_the_prior_is_uniform_at_weight_zero_and_follows_scores_otherwise() -> None:
    assert np.allclose(passage_prior([0.9, 0.1, -0.3], 0.0), 1 / 3)
    prior = passage_prior([0.9, 0.1, -0.3], 1.0)
    assert prior.sum() == pytest.approx(1.0) and prior[0] > prior[1] > prior[2]
    # Standardised first: the same weight behaves alike on cosine, BM25 and RRF score scales.
    assert np.allclose(passage_prior([0.03, 0.02, 0.01], 1.0), passage_prior([30, 20, 10], 1.0))


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Runtime:
    home = tmp_path_factory.mktemp("prior")
    # the prior, not abstention, is under test (this SQuAD 1.1 reader has no no-answer head)
    rt = Runtime(Settings(home=home, reader_model=str(READER_MODEL), reader_abstention="off"))
    rt.ingestor(rt.writable_collection("demo")).ingest_paths([str(REPO / "examples" / "corpus")])
    return rt


def test_a_low_ranked_passage_no_longer_wins_with_the_retrieval_prior(runtime: Runtime) -> None:
    """The MiniLM reader alone prefers "Paris" from the Pierre Curie passage (ranked low);
    weighted by retrieval it answers from the Marie Curie passage, which is right."""
    passages = runtime.retriever("demo").retrieve("Where was Marie Curie born?", 5)
    reader = runtime.reader()
    alone = reader.read("Where was Marie Curie born?", [p.text for p in passages])
    best_alone = max(range(len(alone)), key=lambda i: alone[i].score)
    assert "Marie Curie" not in passages[best_alone].title  # the failure the prior fixes
    answer = reader.answer("Where was Marie Curie born?", passages)
    assert answer.answer == "Warsaw"
    assert answer.citations[0].title == "Marie Curie"
    citation = answer.citations[0]
    source_text = runtime.collection("demo").document_text(citation.doc_id)
    assert source_text[citation.start : citation.end] == "Warsaw"


SELECTION_CASES = json.loads((REPO / "tests" / "golden" / "reader-selection-cases.json").read_text(encoding="utf-8"))


def test_the_passage_the_retriever_ranks_first_wins_over_a_distractor_the_reader_reads_more_confidently() -> None:
    """A recorded grounding question: the old rule (shared-softmax span probability x retrieval
    prior, weight 1) answered "Kelvin Benjamin" from the 3rd passage ("losing top wide receiver
    Kelvin Benjamin"); margin + 3 x standardised retrieval score answers from the 1st."""
    from tests.conftest import NA_READER_MODEL

    (case,) = SELECTION_CASES
    passages = [
        Passage(chunk_id=i, doc_id=i, text=p["text"], start=0, end=len(p["text"]), ordinal=0, source="squad",
                title=p["title"], external_id=None, score=p["score"], rank=i)
        for i, p in enumerate(case["passages"], start=1)
    ]
    reader = ExtractiveReader(str(NA_READER_MODEL), null_threshold=DEFAULT_NULL_THRESHOLD)
    spans = reader.read(case["question"], [p.text for p in passages])
    prior = passage_prior([p.score for p in passages], 1.0)
    old = max(range(len(spans)), key=lambda i: spans[i].score * prior[i])
    assert spans[old].text == "Kelvin Benjamin"  # the failure the new rule fixes
    answer = reader.answer(case["question"], passages)
    assert answer.found and answer.answer == case["gold"] and answer.citations[0].n == 1
    assert answer.details["value"] > answer.details["threshold"]
