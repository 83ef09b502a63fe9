"""The encoder's tokenizer: the Rust `tokenizers` object transformers builds, without transformers.

Importing transformers imports torch, ~3 s of every `rag search` on a 2-core CPU, although the
ONNX and OpenVINO runtimes need neither. So transformers builds the tokenizer once (its
`AutoTokenizer`, which applies the model's tokenizer_config over tokenizer.json), the export step
saves that backend beside the graphs, and later processes load it with `tokenizers` alone.

Truncation and padding are applied per call here, never set on the shared backend: a backend's
truncation setting is process state, and encoders are called from many threads at once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from indexes.errors import ModelLoadError


class TextTokenizer:
    """Token ids for the encoder and token character spans for the chunker."""

    def __init__(self, backend: Tokenizer, pad_id: int) -> None:
        backend.no_truncation()
        backend.no_padding()
        self.backend = backend
        self.pad_id = pad_id
        self._specials = backend.num_special_tokens_to_add(False)

    @classmethod
    def from_transformers(cls, tokenizer: Any) -> TextTokenizer:
        """The backend of a transformers fast tokenizer, copied (the original keeps its settings)."""
        return cls(Tokenizer.from_str(tokenizer.backend_tokenizer.to_str()), int(tokenizer.pad_token_id or 0))

    @classmethod
    def load(cls, folder: Path) -> TextTokenizer:
        """What `save` wrote."""
        meta = json.loads((folder / "tokenizer-meta.json").read_text(encoding="utf-8"))
        return cls(Tokenizer.from_file(str(folder / "tokenizer.json")), int(meta["pad_id"]))

    def save(self, folder: Path) -> None:
        """Two files; callers rename a finished folder into place, so readers never see half."""
        self.backend.save(str(folder / "tokenizer.json"))
        (folder / "tokenizer-meta.json").write_text(json.dumps({"pad_id": self.pad_id}), encoding="utf-8")

    def ids(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        """Ids with the model's special tokens, cut to `max_length` in all (transformers'
        `truncation=True, max_length=...` for single texts)."""
        keep = max(0, max_length - self._specials)
        out: list[list[int]] = []
        for encoding in self.backend.encode_batch(list(texts), add_special_tokens=False):
            encoding.truncate(keep)
            out.append(self.backend.post_process(encoding).ids)
        return out

    def spans(self, text: str) -> list[tuple[int, int]]:
        """(start, end) character offsets of the text's tokens, special tokens and empty ones left out."""
        offsets = self.backend.encode(text, add_special_tokens=False).offsets
        return [(start, end) for start, end in offsets if end > start]


def load_tokenizer(path: str, model: str) -> TextTokenizer:
    """The model's fast tokenizer as transformers builds it (chunk offsets need a fast one)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"cannot load embedding model {model!r}: not a local folder and not in the "
            f"Hugging Face cache ({type(exc).__name__}). Give a local path with RAG_EMBEDDING_MODEL."
        ) from exc
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(f"{model!r} has no fast tokenizer; offsets need one")
    return TextTokenizer.from_transformers(tokenizer)
