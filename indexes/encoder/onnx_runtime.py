"""ONNX Runtime on the CPU: the exported graph with transformer fusions, fp32 or static int8
(calibrated activation scales, so a vector does not depend on its batch: `indexes.encoder.export`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from indexes.encoder.base import Encoder
from indexes.encoder.export import exported_model, exported_tokenizer
from indexes.encoder.spec import EncoderSpec, available_cores
from indexes.errors import InvalidInput, ModelLoadError


class OnnxEncoder(Encoder):
    runtime = "onnx"

    def __init__(
        self,
        spec: EncoderSpec,
        *,
        cache_dir: Path,
        quantize: bool = False,
        threads: int | None = None,
        device: str = "cpu",
        max_batch_tokens: int = 16384,
        max_batch_size: int = 128,
    ) -> None:
        if device != "cpu":
            raise InvalidInput("the onnx encoder runtime runs on the CPU; use RAG_ENCODER_RUNTIME=torch on a GPU")
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - install problem
            raise ModelLoadError(f"RAG_ENCODER_RUNTIME=onnx needs onnxruntime (pip install 'rag[speed]'): {exc}") from exc
        tokenizer, (dim, limit) = exported_tokenizer(spec, cache_dir)
        self.path = exported_model(spec, cache_dir, "ort-int8" if quantize else "ort")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = max(1, int(threads or available_cores()))
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        super().__init__(
            spec, tokenizer, dim=dim, model_max_tokens=limit, device="cpu", quantized=quantize,
            max_batch_tokens=max_batch_tokens, max_batch_size=max_batch_size,
        )

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "graph": str(self.path)}

    def _embed(self, input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        # InferenceSession.run is thread-safe and releases the GIL.
        (vectors,) = self.session.run(["embedding"], {"input_ids": input_ids, "attention_mask": mask})
        return np.asarray(vectors, dtype=np.float32)
