"""The transformers backend on the same SmolLM2 GGUF (de-quantised by transformers): chat template,
greedy decoding, prompt tokens stripped, streaming through TextIteratorStreamer."""

from __future__ import annotations

import pytest

from rag.generation.hf import TransformersGenerator
from rag.generation.llamacpp import default_gguf

pytestmark = pytest.mark.slow  # loading and de-quantising takes ~30-60 s on two shared cores

MESSAGES = [{"role": "user", "content": "What is the capital of France? Answer in one short sentence."}]


@pytest.fixture(scope="module")
def generator() -> TransformersGenerator:
    import accelerate  # noqa: F401  (gguf and accelerate: the llm extra, in dev)
    import gguf  # noqa: F401
    return TransformersGenerator(default_gguf(), max_tokens=12)


def test_transformers_generation_is_greedy_and_contains_no_prompt(generator: TransformersGenerator) -> None:
    text = generator.generate(MESSAGES)
    assert "Paris" in text
    assert "capital of France?" not in text and "user" not in text
    assert generator.generate(MESSAGES) == text


def test_transformers_streaming_yields_the_same_text(generator: TransformersGenerator) -> None:
    pieces = list(generator.stream(MESSAGES))
    assert len(pieces) > 1
    assert "".join(pieces).strip() == generator.generate(MESSAGES).strip()
