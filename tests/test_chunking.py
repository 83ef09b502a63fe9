"""Chunks are sentence-aware token windows whose offsets point back into the document."""

from __future__ import annotations

import json

import pytest

from indexes.encoder import TextTokenizer
from indexes.errors import InvalidInput
from ingest.chunking import SentenceWindowChunker
from tests.conftest import SCIFACT


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    from indexes.encoder import DEFAULT_EMBEDDER, resolve_model_path

    return AutoTokenizer.from_pretrained(resolve_model_path(DEFAULT_EMBEDDER))


def _abstracts(n: int) -> list[str]:
    with (SCIFACT / "corpus.jsonl").open(encoding="utf-8") as handle:
        return [json.loads(line)["text"] for _, line in zip(range(n), handle)]


def _tokens(tokenizer, text: str) -> int:  # type: ignore[no-untyped-def]
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_offsets_point_back_into_the_document(tokenizer) -> None:  # type: ignore[no-untyped-def]
    chunker = SentenceWindowChunker(TextTokenizer.from_transformers(tokenizer), 64, 16)
    for text in _abstracts(30):
        for chunk in chunker.split(text):
            assert text[chunk.start : chunk.end] == chunk.text


def test_windows_respect_the_token_budget_and_cover_the_whole_text(tokenizer) -> None:  # type: ignore[no-untyped-def]
    chunker = SentenceWindowChunker(TextTokenizer.from_transformers(tokenizer), 64, 16)
    for text in _abstracts(30):
        chunks = chunker.split(text)
        assert all(_tokens(tokenizer, c.text) <= 64 for c in chunks)
        assert chunks[0].start == len(text) - len(text.lstrip())
        assert chunks[-1].end == len(text.rstrip())
        for before, after in zip(chunks, chunks[1:]):
            # Overlapping, or adjacent with only whitespace between: nothing is skipped.
            assert after.start <= before.end or not text[before.end : after.start].strip()
        assert [c.ordinal for c in chunks] == list(range(len(chunks)))


def test_windows_end_on_sentence_boundaries(tokenizer) -> None:  # type: ignore[no-untyped-def]
    text = " ".join(f"Sentence {i} is a short statement about item {i}." for i in range(40))
    chunks = SentenceWindowChunker(TextTokenizer.from_transformers(tokenizer), 40, 10).split(text)
    assert len(chunks) > 3
    assert all(c.text.endswith(".") and c.text.startswith("Sentence") for c in chunks)


def test_overlap_repeats_trailing_sentences(tokenizer) -> None:  # type: ignore[no-untyped-def]
    text = " ".join(f"Fact number {i} holds." for i in range(30))
    chunks = SentenceWindowChunker(TextTokenizer.from_transformers(tokenizer), 30, 12).split(text)
    for before, after in zip(chunks, chunks[1:]):
        assert after.start < before.end


def test_a_sentence_longer_than_a_window_is_cut_at_token_boundaries(tokenizer) -> None:  # type: ignore[no-untyped-def]
    text = "word " * 500
    chunks = SentenceWindowChunker(TextTokenizer.from_transformers(tokenizer), 50, 10).split(text.strip())
    assert len(chunks) >= 10
    assert all(_tokens(tokenizer, c.text) <= 50 for c in chunks)


def test_blank_text_has_no_chunks_and_bad_sizes_are_refused(tokenizer) -> None:  # type: ignore[no-untyped-def]
    assert SentenceWindowChunker(tokenizer).split("  \n\t ") == []
    with pytest.raises(InvalidInput):
        SentenceWindowChunker(TextTokenizer.from_transformers(tokenizer), 32, 32)


def test_reading_in_windows_gives_the_chunks_of_reading_whole(tokenizer) -> None:  # type: ignore[no-untyped-def]
    text = "\n\n".join(_abstracts(60))
    whole = SentenceWindowChunker(TextTokenizer.from_transformers(tokenizer), chunk_tokens=128, overlap_tokens=24, window_chars=len(text) + 1).split(text)
    windowed = SentenceWindowChunker(TextTokenizer.from_transformers(tokenizer), chunk_tokens=128, overlap_tokens=24, window_chars=3000).split(text)
    assert len(text) > 10 * 3000
    assert [(c.start, c.end) for c in windowed] == [(c.start, c.end) for c in whole]


def test_a_text_without_sentence_ends_is_cut_between_words_at_window_edges(tokenizer) -> None:  # type: ignore[no-untyped-def]
    text = "radium glows " * 5000
    chunks = SentenceWindowChunker(TextTokenizer.from_transformers(tokenizer), chunk_tokens=64, overlap_tokens=8, window_chars=1000).split(text)
    assert all(text[c.start : c.end] == c.text for c in chunks)
    assert all(c.text.startswith("radium") or c.text.startswith("glows") for c in chunks)
    assert all(c.text.endswith("radium") or c.text.endswith("glows") for c in chunks)
    assert max(_tokens(tokenizer, c.text) for c in chunks) <= 64
    assert chunks[-1].end == len(text.rstrip())
