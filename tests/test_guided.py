"""Reader-guided generation on real models: SmolLM2 through llama.cpp (greedy), the abstaining
reader and the support judge from shared/, over the sample corpus. The span fallback is forced
honestly: a generation cut at a few tokens is a fragment, which the check never verifies."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rag.answer import NOT_IN_SOURCES
from rag.guided import READER_SPAN
from rag.prompt import build_messages
from rag.qa import AskPipeline
from rag.runtime import Runtime
from rag.settings import load_settings
from tests.conftest import REPO

QUESTION = "Where was Marie Curie born?"
UNANSWERABLE = "Who designed the Sydney Opera House?"


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    import xllamacpp  # noqa: F401  (in the dev extra: missing fails, not skips)
    rt = Runtime(
        load_settings(
            home=tmp_path_factory.mktemp("guided-home"), generator_context_tokens=2048, generator_max_tokens=48,
        )
    )
    rt.ingestor(rt.writable_collection("demo")).ingest_paths([str(REPO / "examples" / "corpus")])
    yield rt


@pytest.fixture(scope="module")
def pipeline(runtime: Runtime) -> AskPipeline:
    return runtime.ask_pipeline()


def _sibling(pipeline: AskPipeline, max_tokens: int, reader_guided: bool = True) -> AskPipeline:
    """The same loaded models with another generation length (or guide setting)."""
    other = pipeline.with_retriever(pipeline._retriever)
    other.max_tokens, other.reader_guided = max_tokens, reader_guided
    return other


def test_the_prompt_gives_the_readers_spans_with_their_passage_numbers() -> None:
    from indexes.types import Passage

    passage = Passage(
        chunk_id=1, doc_id=1, text="Marie Curie was born in Warsaw.", start=0, end=31, ordinal=0, source="c.md", title="Marie Curie",
        external_id=None, score=1.0, rank=1,
    )
    guided = build_messages(QUESTION, [passage], hints=[(1, "Warsaw")])
    plain = build_messages(QUESTION, [passage])
    assert 'Candidate answers found in the sources: "Warsaw" in [1].' in guided[-1]["content"]
    assert guided[-1]["content"].endswith(f"Question: {QUESTION}") and "one or two short sentences that state the answer" in guided[0]["content"]
    assert "Candidate answers" not in plain[-1]["content"] and "Candidate answers" not in plain[1]["content"]


def test_a_guided_prompt_shows_only_the_sentences_holding_the_readers_spans_under_their_own_numbers() -> None:
    """What a guided answer can use is a sentence stating a span, so the rest of each passage is
    prompt evaluated before the first token for nothing (about 140 tokens a passage)."""
    from indexes.types import Passage
    from rag.prompt import evidence

    def passage(n: int, text: str) -> Passage:
        return Passage(n, n, text, 0, len(text), 0, f"{n}.md", f"Title {n}", None, 1.0, n)

    curie = "Marie Curie was a physicist and chemist. She was born in Warsaw in 1867. She moved to Paris in 1891. " + (
        "Her laboratory was in a converted shed. She won two Nobel Prizes."
    )
    other = "Warsaw is the capital of Poland. " * 20
    messages = build_messages(QUESTION, [passage(1, other), passage(2, curie)], hints=[(2, "Warsaw")])
    turn = messages[-1]["content"]
    sources = turn[turn.index("<sources>") : turn.index("</sources>")]
    # source 1 had no span: it is left out; source 2 keeps its number, its span's sentence and the
    # sentence before it (whom "She" names), not the rest
    assert "[1]" not in sources and "capital of Poland" not in sources
    assert "[2] Title 2\nMarie Curie was a physicist and chemist. She was born in Warsaw in 1867." in sources
    assert "Paris" not in sources and "Nobel" not in sources
    assert 'Candidate answers found in the sources: "Warsaw" in [2].' in turn
    # two spans apart: the gap is marked; a span the passage does not hold: its head
    assert evidence(curie, ["Warsaw", "two Nobel Prizes"]) == (
        "Marie Curie was a physicist and chemist. She was born in Warsaw in 1867. ... "
        "Her laboratory was in a converted shed. She won two Nobel Prizes."
    )
    assert evidence(curie, ["Kyoto"], max_chars=24) == "Marie Curie was a physic"


def test_a_generative_answer_is_reader_guided_and_verified_by_the_judge(pipeline: AskPipeline) -> None:
    answer = pipeline.ask(QUESTION, "demo", "generative", k=3)
    assert answer.details["reader_guided"] and answer.details["reader_hints"][0]["text"] == "Warsaw"
    assert answer.details["verifier"] == "nli" and answer.details["verifier_note"] == "auto: the configured support judge"
    assert answer.found and "Warsaw" in answer.answer and any(c.verified for c in answer.citations)
    assert "guide_ms" in answer.timings


def test_a_failed_generation_falls_back_to_the_readers_verified_span_marked_as_such(pipeline: AskPipeline) -> None:
    # 3 tokens: the model's sentence is cut by the token limit, which the check never verifies
    answer = _sibling(pipeline, 3).ask(QUESTION, "demo", "generative", k=3)
    assert answer.found and answer.fallback == READER_SPAN and answer.to_dict()["fallback"] == READER_SPAN
    assert answer.details["fallback"] == READER_SPAN and answer.details["reader_span"] == "Warsaw"
    [citation] = answer.citations
    assert citation.verified and "Warsaw" in citation.text and answer.answer.endswith(f"[{citation.n}].")
    assert answer.passages[citation.n - 1].text[citation.chunk_start : citation.chunk_end] == citation.text
    assert answer.details["unsupported_sentences"]  # the model's cut draft is still reported


def test_without_the_guide_the_same_failed_generation_says_not_in_the_sources(pipeline: AskPipeline) -> None:
    answer = _sibling(pipeline, 3, reader_guided=False).ask(QUESTION, "demo", "generative", k=3)
    assert not answer.found and answer.answer == NOT_IN_SOURCES and answer.fallback is None
    assert not answer.details["reader_guided"]


def test_an_unanswerable_question_is_still_refused_with_no_fallback(pipeline: AskPipeline) -> None:
    for tokens in (3, 48):
        answer = _sibling(pipeline, tokens).ask(UNANSWERABLE, "demo", "generative", k=3)
        assert not answer.found and answer.answer == NOT_IN_SOURCES and answer.fallback is None, tokens
        assert answer.details["reader_hints"] == []  # the reader abstained: no candidate was offered


def test_a_true_but_irrelevant_verified_sentence_is_not_the_guided_answer_the_readers_span_is(pipeline: AskPipeline) -> None:
    """The demo's question: the judge verifies "His father Eugène Curie was a doctor" (true, in the
    passage) but it does not say where Pierre Curie was born; the reader's span (Paris) does. The
    judge scores the span claim "Where was Pierre Curie born? Paris." 0.966 (< 0.98) and refused it;
    the lexical check verifies it in its own sentence, so the span sentence is the answer (failed
    before: "Not in the sources." from the CLI, and the irrelevant sentence unguided)."""
    from rag.citations import check_answer
    from rag.guided import guided_answer
    from rag.qa import suspicious_passages

    question = "Where was Pierre Curie born?"
    passages = pipeline._retriever("demo", None).retrieve(question, 3)
    checked = check_answer(question, "His father Eugène Curie was a doctor.", passages, verifier=pipeline.verifier)
    assert checked.found and pipeline.verifier.name == "nli"  # the judge verifies the irrelevant sentence ...
    guide = pipeline.reader.answer(question, passages, suspicious_passages(passages))
    assert guide.answer == "Paris"
    answer = guided_answer(question, guide, passages, pipeline.verifier, checked)
    assert answer.found and answer.fallback == READER_SPAN  # ... but it is not the answer
    n = guide.citations[0].n
    assert answer.answer == f"Pierre Curie was born in Paris on 15 May 1859 [{n}]."
    assert [(c.n, c.verified) for c in answer.citations] == [(n, True)]


def test_a_question_the_reader_abstains_on_is_refused_before_anything_is_generated(pipeline: AskPipeline) -> None:
    """No draft can pass the guided gates when the reader abstains, so none is generated or
    streamed (before: the draft streamed for seconds, then 'Not in the sources.')."""
    *pieces, final = list(pipeline.stream(UNANSWERABLE, "demo", "generative", k=3))
    assert pieces == []
    assert not final.found and final.answer == NOT_IN_SOURCES and final.details["reason"] == "the reader found no answer in the passages"
    assert "generate_ms" not in final.timings and "first_token_ms" not in final.timings
