"""The pooling recipe, once: a torch module around the HF encoder.

The torch runtime calls it; the ONNX export traces it, so every runtime pools the same way.
Mean pooling is `facebook/contriever`'s: padded positions are zeroed, the rest summed and
divided by the number of real tokens.
"""

from __future__ import annotations

from typing import Any

import torch

from indexes.encoder.spec import Pooling


class PooledModel(torch.nn.Module):
    def __init__(self, model: Any, pooling: Pooling, normalize: bool) -> None:
        super().__init__()
        self.model = model
        self.pooling = pooling
        self.normalize = normalize

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.pooling == "max":
            pooled = hidden.masked_fill(~attention_mask.bool().unsqueeze(-1), -1e9).max(dim=1).values
        else:
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        if self.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled
