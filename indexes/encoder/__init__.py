"""Text to vectors: one contract (`Encoder`), runtimes behind it, chosen by one setting.

- `torch` (the default, the reference): the HF model in torch; CPU or GPU, fp32/fp16/bf16,
  optional int8 dynamic quantisation on the CPU.
- `onnx`: ONNX Runtime on the CPU with transformer fusions; fp32, or int8 weights (`quantize`).
- `openvino`: OpenVINO on the CPU, fp32.
- `auto` (resolved by `choose_runtime`): `onnx` with int8 weights on the CPU when onnxruntime is
  installed, else `torch`.

The ONNX graphs are exported from the local weights once and cached (`indexes.encoder.export`).
Every runtime computes the same recipe (`EncoderSpec`, pooled by `indexes.encoder.pooling`); fp32
runtimes agree to ~1e-6 and int8 ones to cosine >= 0.99, so the runtime is not part of a
collection's encoder identity: a collection built with one runtime may be searched with another.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

from indexes.encoder.base import Encoder
from indexes.encoder.spec import (
    DEFAULT_EMBEDDER,
    EncoderSpec,
    Pooling,
    TextKind,
    available_cores,
    load_tokenizer,
    resolve_model_path,
    set_threads,
)
from indexes.errors import InvalidInput

EncoderRuntime = Literal["torch", "onnx", "openvino"]
ENCODER_RUNTIMES: tuple[str, ...] = ("torch", "onnx", "openvino")

__all__ = [
    "DEFAULT_EMBEDDER",
    "ENCODER_RUNTIMES",
    "Encoder",
    "EncoderRuntime",
    "EncoderSpec",
    "Pooling",
    "TextKind",
    "available_cores",
    "choose_runtime",
    "load_encoder",
    "load_tokenizer",
    "resolve_model_path",
    "set_threads",
]


def choose_runtime(requested: str, device: str, quantize: bool | None) -> tuple[str, bool]:
    """(runtime, int8) for a requested runtime (`auto` or one of `ENCODER_RUNTIMES`) on `device`.

    `auto` is the fastest CPU runtime measured: ONNX Runtime with int8 weights when onnxruntime
    is installed (~1.7x torch per token; costs 0.001-0.003 nDCG@10 on SciFact, README,
    Ingestion), else torch; torch on a GPU. `quantize` None means int8 only where `auto` picked
    ONNX Runtime; a runtime named explicitly runs fp32 unless `quantize` is True.
    """
    if requested == "auto":
        runtime = "onnx" if device == "cpu" and importlib.util.find_spec("onnxruntime") is not None else "torch"
        return runtime, (runtime == "onnx") if quantize is None else quantize
    if requested not in ENCODER_RUNTIMES:
        raise InvalidInput(f"unknown encoder runtime {requested!r}; use auto or one of {', '.join(ENCODER_RUNTIMES)}")
    return requested, bool(quantize)


def load_encoder(
    spec: EncoderSpec,
    runtime: str = "torch",
    *,
    device: str = "cpu",
    dtype: str = "float32",
    quantize: bool = False,
    threads: int | None = None,
    cache_dir: Path | None = None,
) -> Encoder:
    """The encoder for `spec` on `runtime`. ONNX and OpenVINO need `cache_dir` for the exported
    graph (the runtime passes `RAG_HOME/models`)."""
    if runtime == "torch":
        from indexes.encoder.torch_runtime import TorchEncoder

        set_threads(threads)
        return TorchEncoder(spec, device=device, dtype=dtype, quantize=quantize)
    if runtime not in ENCODER_RUNTIMES:
        raise InvalidInput(f"unknown encoder runtime {runtime!r}; use one of {', '.join(ENCODER_RUNTIMES)}")
    if cache_dir is None:
        raise InvalidInput(f"the {runtime} encoder runtime needs a cache folder for its exported graph")
    if runtime == "onnx":
        from indexes.encoder.onnx_runtime import OnnxEncoder

        return OnnxEncoder(spec, cache_dir=cache_dir, quantize=quantize, threads=threads, device=device)
    from indexes.encoder.openvino_runtime import OpenVinoEncoder

    return OpenVinoEncoder(spec, cache_dir=cache_dir, quantize=quantize, threads=threads, device=device)
