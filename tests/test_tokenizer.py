"""`TextTokenizer` gives the ids and offsets transformers' fast tokenizer gives, for WordPiece (the
default embedder) and byte-level BPE (RoBERTa-style, trained here: no download), before and after
a save and load, which is how CPU commands read it without importing transformers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from indexes.encoder import DEFAULT_EMBEDDER, TextTokenizer, resolve_model_path
from tests.conftest import SCIFACT

EDGES = ["", " ", "  leading spaces", "a", "ÉCOLE naïve café 東京 🙂", "x" * 3000, "word " * 600, "query: hello"]


def _abstracts(start: int, stop: int) -> list[str]:
    with (SCIFACT / "corpus.jsonl").open(encoding="utf-8") as handle:
        return [json.loads(line)["title"] + "\n\n" + json.loads(line)["text"] for i, line in enumerate(handle) if start <= i < stop]


def _wordpiece() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model_path(DEFAULT_EMBEDDER))


def _byte_level_bpe() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(_abstracts(0, 200), trainers.BpeTrainer(vocab_size=2000, special_tokens=["<s>", "<pad>", "</s>", "<unk>"]))
    backend.post_processor = processors.RobertaProcessing(
        ("</s>", backend.token_to_id("</s>")), ("<s>", backend.token_to_id("<s>")), trim_offsets=True, add_prefix_space=True
    )
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")


@pytest.mark.parametrize("build", [_wordpiece, _byte_level_bpe], ids=["wordpiece", "byte-level-bpe"])
def test_ids_and_offsets_equal_transformers_before_and_after_a_save(build: Any, tmp_path: Path) -> None:
    reference = build()
    texts = _abstracts(200, 400) + EDGES
    saved = TextTokenizer.from_transformers(reference)
    saved.save(tmp_path)
    for ours in (TextTokenizer.from_transformers(reference), TextTokenizer.load(tmp_path)):
        assert ours.pad_id == reference.pad_token_id
        for max_length in (512, 128, 5):
            expected = reference(texts, truncation=True, max_length=max_length)["input_ids"]
            assert ours.ids(texts, max_length) == expected
        for text in texts:
            offsets = reference(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
            assert ours.spans(text) == [tuple(pair) for pair in offsets if pair[1] > pair[0]]


def test_the_reference_tokenizer_keeps_its_own_settings() -> None:
    """`from_transformers` copies the backend: clearing truncation and padding on ours (which it
    does) leaves the caller's backend as it was. (Read on the backend itself: transformers' own
    `__call__` resets both on every call, so calling it would not show the difference.)"""
    reference = _wordpiece()
    reference.backend_tokenizer.enable_truncation(16)
    reference.backend_tokenizer.enable_padding(length=32)
    ours = TextTokenizer.from_transformers(reference)
    assert len(ours.ids(["a long text " * 100], 512)[0]) > 16
    assert reference.backend_tokenizer.truncation is not None and reference.backend_tokenizer.truncation["max_length"] == 16
    assert reference.backend_tokenizer.padding is not None and reference.backend_tokenizer.padding["length"] == 32
