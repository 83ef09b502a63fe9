"""OpenVINO on the CPU: the plain exported graph, compiled with OpenVINO's own fusions.

Precision `auto` leaves the choice to OpenVINO: bf16 on CPUs with native bf16 (AMX), where it
runs MiniLM 2.9x faster than fp32 at cosine 0.99997 to the torch reference; fp32 elsewhere.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from indexes.encoder.base import Encoder
from indexes.encoder.export import exported_model, exported_tokenizer
from indexes.encoder.spec import EncoderSpec, available_cores
from indexes.errors import InvalidInput, ModelLoadError

# RAG_PRECISION -> OpenVINO's inference precision hint; "" leaves the choice to OpenVINO.
_PRECISIONS = {"auto": "", "float32": "f32", "bfloat16": "bf16", "float16": "f16"}


class OpenVinoEncoder(Encoder):
    runtime = "openvino"

    def __init__(
        self,
        spec: EncoderSpec,
        *,
        cache_dir: Path,
        quantize: bool = False,
        threads: int | None = None,
        device: str = "cpu",
        precision: str = "auto",
        max_batch_tokens: int = 16384,
        max_batch_size: int = 128,
    ) -> None:
        if device != "cpu":
            raise InvalidInput("the openvino encoder runtime runs on the CPU; use RAG_ENCODER_RUNTIME=torch on a GPU")
        if quantize:
            # ONNX Runtime's dynamic int8 graph runs slower than fp32 in OpenVINO (measured);
            # int8 here would need a calibrated static quantisation.
            raise InvalidInput("int8 (RAG_QUANTIZE) is offered by the onnx and torch runtimes, not openvino")
        if precision not in _PRECISIONS:
            raise InvalidInput(f"openvino precision must be one of {', '.join(_PRECISIONS)}, not {precision!r}")
        try:
            import openvino as ov
        except ImportError as exc:  # pragma: no cover - install problem
            raise ModelLoadError(f"RAG_ENCODER_RUNTIME=openvino needs openvino (pip install 'rag[speed]'): {exc}") from exc
        tokenizer, (dim, limit) = exported_tokenizer(spec, cache_dir)
        self.path = exported_model(spec, cache_dir, "plain")
        core = ov.Core()
        config: dict[str, Any] = {"INFERENCE_NUM_THREADS": max(1, int(threads or available_cores())), "PERFORMANCE_HINT": "LATENCY"}
        if _PRECISIONS[precision]:
            config["INFERENCE_PRECISION_HINT"] = _PRECISIONS[precision]
        self.compiled = core.compile_model(core.read_model(str(self.path)), "CPU", config)
        # What OpenVINO chose (for `auto`) or was told, as torch names it: f32 -> float32.
        chosen = self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        self.precision = {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}.get(chosen, chosen)
        # An infer request is not thread-safe: one per calling thread.
        self._local = threading.local()
        super().__init__(
            spec, tokenizer, dim=dim, model_max_tokens=limit, device="cpu", quantized=False,
            max_batch_tokens=max_batch_tokens, max_batch_size=max_batch_size,
        )

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "graph": str(self.path), "precision": self.precision}

    def _embed(self, input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        result = request.infer({"input_ids": input_ids, "attention_mask": mask})
        return np.array(result[0], dtype=np.float32)
