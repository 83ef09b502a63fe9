"""The reference runtime: the HF model in torch, on the CPU or a GPU (fp16/bf16 there)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from indexes.encoder.base import Encoder
from indexes.encoder.spec import EncoderSpec, resolve_model_path
from indexes.encoder.tokenizer import load_tokenizer
from indexes.errors import InvalidInput, ModelLoadError

DTYPES = ("float32", "float16", "bfloat16")


class TorchEncoder(Encoder):
    runtime = "torch"

    def __init__(
        self,
        spec: EncoderSpec,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        quantize: bool = False,
        max_batch_tokens: int = 16384,
        max_batch_size: int = 128,
    ) -> None:
        try:
            import torch
            from transformers import AutoModel
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        except ImportError as exc:  # pragma: no cover - install problem
            raise ModelLoadError(f"the torch encoder needs torch and transformers: {exc}") from exc
        from indexes.encoder.pooling import PooledModel

        if dtype not in DTYPES:
            raise InvalidInput(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
        path = resolve_model_path(spec.model)
        tokenizer = load_tokenizer(path, spec.model)
        try:
            model = AutoModel.from_pretrained(path)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load embedding model {spec.model!r}: {type(exc).__name__}: {exc}") from exc
        model.eval().to(device)
        if dtype != "float32":
            model.to(getattr(torch, dtype))
        if quantize:
            if device != "cpu" or dtype != "float32":
                raise InvalidInput("int8 dynamic quantisation runs on the CPU, from float32")
            from torch.ao.quantization import per_channel_dynamic_qconfig

            # Per-channel scales: per-tensor int8 costs MiniLM ~0.08 cosine, per-channel ~0.02.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = torch.ao.quantization.quantize_dynamic(
                    model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8
                )
        self.model: Any = model
        self.dtype = dtype
        self._pooled = PooledModel(model, spec.pooling, spec.normalize)
        super().__init__(
            spec,
            tokenizer,
            dim=int(model.config.hidden_size),
            model_max_tokens=int(getattr(model.config, "max_position_embeddings", spec.max_tokens) or 512),
            device=device,
            quantized=quantize,
            max_batch_tokens=max_batch_tokens,
            max_batch_size=max_batch_size,
        )

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "dtype": self.dtype}

    def _embed(self, input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            pooled = self._pooled(
                torch.from_numpy(input_ids).to(self.device), torch.from_numpy(mask).to(self.device)
            )
        return pooled.float().cpu().numpy()
