"""`AskPipeline` and `rag ask` on the sample corpus: real encoder, real SmolLM2 through llama.cpp,
the reader from shared/ when it is there. Generation is kept to 32 tokens."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from indexes.errors import InvalidInput
from rag.answer import Answer
from rag.runtime import Runtime
from rag.settings import load_settings
from tests.conftest import READER_MODEL, REPO, run_cli

QUESTION = "Where was Marie Curie born?"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ask-home")


@pytest.fixture(scope="module")
def runtime(home: Path) -> Iterator[Runtime]:
    pytest.importorskip("xllamacpp")
    rt = Runtime(load_settings(home=home, generator_max_tokens=32, generator_context_tokens=2048, reader_model=str(READER_MODEL)))
    target = rt.writable_collection("demo")
    rt.ingestor(target).ingest_paths([str(REPO / "examples" / "corpus")])
    yield rt


def test_a_generative_answer_carries_checked_citations_and_stage_timings(runtime: Runtime) -> None:
    answer = runtime.ask_pipeline().ask(QUESTION, "demo", "generative", k=3)
    assert answer.mode == "generative"
    assert set(answer.timings) == {"retrieve_ms", "generate_ms", "check_ms", "total_ms"}
    assert answer.timings["total_ms"] >= answer.timings["generate_ms"] > 0
    assert answer.details["generated"].strip() and answer.details["generator"].startswith("llamacpp:")
    if answer.found:
        assert any(c.verified for c in answer.citations) or answer.details["sentences"]
    else:
        assert answer.citations == [] and answer.passages  # not found: the best passages instead


def test_streaming_yields_text_pieces_then_the_same_checked_answer(runtime: Runtime) -> None:
    pipeline = runtime.ask_pipeline()
    items = list(pipeline.stream(QUESTION, "demo", "generative", k=3))
    *pieces, final = items
    assert isinstance(final, Answer) and all(isinstance(p, str) for p in pieces)
    assert "".join(pieces) == final.details["generated"]
    assert pipeline.ask(QUESTION, "demo", "generative", k=3).answer == final.answer  # greedy


def test_an_unknown_mode_is_refused(runtime: Runtime) -> None:
    with pytest.raises(InvalidInput, match="extractive or generative"):
        runtime.ask_pipeline().ask(QUESTION, "demo", "abstractive")


def test_extractive_answer_cites_the_span_in_its_passage(runtime: Runtime) -> None:
    if not callable(getattr(runtime, "reader", None)) or not READER_MODEL.is_dir():
        pytest.skip("no extractive reader in this checkout")
    answer = runtime.ask_pipeline().ask(QUESTION, "demo", "extractive", k=3)
    assert answer.mode == "extractive" and answer.found
    assert set(answer.timings) >= {"retrieve_ms", "read_ms", "total_ms"}
    cited = answer.citations[0]
    passage = answer.passages[cited.n - 1]
    assert passage.text[cited.chunk_start : cited.chunk_end] == cited.text == answer.answer


def test_rag_ask_json_prints_the_one_answer_schema(runtime: Runtime, home: Path) -> None:
    result = run_cli(
        "ask", QUESTION, "--collection", "demo", "--mode", "generative", "-k", "3", "--json",
        home=home, env={"RAG_GENERATOR_MAX_TOKENS": "32"},
    )
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert set(payload) >= {"answer", "mode", "citations", "passages", "timings"}
    assert payload["mode"] == "generative"
    for citation in payload["citations"]:
        assert set(citation) >= {"n", "doc_id", "chunk_id", "source", "start", "end", "text", "verified", "origin"}
        assert citation["origin"] in ("model", "attributed")


def test_rag_ask_text_streams_then_prints_citations_or_the_best_passages(runtime: Runtime, home: Path) -> None:
    result = run_cli(
        "ask", QUESTION, "--collection", "demo", "--mode", "generative", "-k", "3",
        home=home, env={"RAG_GENERATOR_MAX_TOKENS": "32"},
    )
    assert result.returncode == 0, result.stderr
    assert "total" in result.stdout and "generator: llamacpp:" in result.stdout
    assert ("best passages:" in result.stdout) or ("[1] " in result.stdout) or ("not supported" in result.stdout)
    assert "\033[1m" not in result.stdout  # not a terminal: no ANSI codes
