"""The encoder contract: texts in, one float32 vector per text out, whatever runs the network.

Tokenisation, length-sorted batching under a token budget and the choice of prefix are the same
for every runtime and live here; a runtime only turns one padded batch of token ids into pooled
vectors (`_embed`). Pooling itself is one torch module (`indexes.encoder.pooling`), run directly
by the torch runtime and exported into the graph the ONNX and OpenVINO runtimes execute.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np

from indexes.encoder.spec import EncoderSpec, TextKind
from indexes.encoder.tokenizer import TextTokenizer
from indexes.errors import InvalidInput


class Encoder(ABC):
    """A loaded encoder. `encode` is the one entry point; it is safe to call from many threads
    for inference (the runtimes release the GIL and never mutate the model after load)."""

    runtime: ClassVar[str]

    def __init__(
        self,
        spec: EncoderSpec,
        tokenizer: TextTokenizer,
        *,
        dim: int,
        model_max_tokens: int,
        device: str = "cpu",
        quantized: bool = False,
        max_batch_tokens: int = 16384,
        max_batch_size: int = 128,
    ) -> None:
        self.spec = replace(spec, max_tokens=min(spec.max_tokens, model_max_tokens))
        self.tokenizer = tokenizer
        self.dim = dim
        self.device = device
        self.quantized = quantized
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size

    @property
    def max_tokens(self) -> int:
        return self.spec.max_tokens

    def describe(self) -> dict[str, Any]:
        """How this encoder runs (not what it computes: that is `spec`)."""
        return {"runtime": self.runtime, "device": self.device, "quantized": self.quantized}

    def encode(self, texts: Sequence[str], kind: TextKind = "passage", progress: Any | None = None) -> np.ndarray:
        """Embed `texts` into float32[n, dim], in input order.

        Texts are tokenised once, sorted by length and packed into batches under a token budget,
        so short passages never pay for a long neighbour's padding.
        """
        if kind not in ("passage", "query"):
            raise InvalidInput(f"kind must be 'passage' or 'query', not {kind!r}")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        prefix = self.spec.query_prefix if kind == "query" else self.spec.passage_prefix
        ids = self.tokenizer.ids([prefix + t for t in texts] if prefix else texts, self.max_tokens)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]), reverse=True)
        pad_id = self.tokenizer.pad_id
        start = 0
        while start < len(order):
            longest = len(ids[order[start]])
            size = max(1, min(self.max_batch_size, self.max_batch_tokens // max(longest, 1)))
            # A batch ends where a text would pad to under 3/4 of its width: a batch of queries of
            # 10-50 tokens computed about 45% padding; passages of one chunk size never hit this.
            end = start + 1
            while end < min(len(order), start + size) and len(ids[order[end]]) * 4 >= longest * 3:
                end += 1
            size = end - start
            members = order[start : start + size]
            input_ids = np.full((len(members), longest), pad_id, dtype=np.int64)
            mask = np.zeros((len(members), longest), dtype=np.int64)
            for row, index in enumerate(members):
                seq = ids[index]
                input_ids[row, : len(seq)] = seq
                mask[row, : len(seq)] = 1
            out[members] = self._embed(input_ids, mask)
            if progress is not None:
                progress.update(len(members))
            start += size
        return out

    @abstractmethod
    def _embed(self, input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Pooled (and, per the spec, normalised) float32 vectors of one padded batch."""
