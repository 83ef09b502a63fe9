"""Text to vectors: one contract (`Encoder`), runtimes behind it, chosen by one setting.

- `torch` (the reference): the HF model in torch; CPU or GPU, fp32/fp16/bf16,
  optional int8 dynamic quantisation on the CPU.
- `onnx`: ONNX Runtime on the CPU with transformer fusions; fp32, or static int8 (`quantize`:
  activation scales calibrated once, so a text's vector does not depend on its batch).
- `openvino`: OpenVINO on the CPU, fp32, or bf16 where the CPU computes it natively (AMX).
- `auto` (resolved by `choose_runtime`, explained by `explain_runtime`): on a CPU with native
  bf16, `openvino` in bf16 (cosine 0.99997 to torch fp32, ~3.9x faster on an AMX Xeon); on other
  CPUs `openvino` in fp32, else `onnx` fp32; `onnx` static int8 only with RAG_QUANTIZE; else, and
  on a GPU, `torch`.

The ONNX graphs are exported from the local weights once and cached (`indexes.encoder.export`).
Every runtime computes the same recipe (`EncoderSpec`, pooled by `indexes.encoder.pooling`); fp32
runtimes agree to ~1e-6 and int8 ones to cosine >= 0.99, so the runtime is not part of a
collection's encoder identity: a collection built with one runtime may be searched with another.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from indexes.encoder.base import Encoder
from indexes.encoder.spec import (
    DEFAULT_EMBEDDER,
    EncoderSpec,
    Pooling,
    TextKind,
    available_cores,
    resolve_model_path,
    set_threads,
)
from indexes.encoder.tokenizer import TextTokenizer, load_tokenizer
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
    "TextTokenizer",
    "RuntimeChoice",
    "available_cores",
    "choose_runtime",
    "cpu_computes_bf16",
    "cpu_flags",
    "explain_runtime",
    "encoder_dtype",
    "encoder_tokenizer",
    "load_encoder",
    "load_tokenizer",
    "resolve_model_path",
    "resolve_precision",
    "set_threads",
    "torch_precision",
]


@functools.lru_cache(maxsize=1)
def cpu_computes_bf16() -> bool:
    """Whether OpenVINO reports native bf16 on this CPU (AMX or AVX512-BF16); False without
    OpenVINO. Asked of the library that will run the graph rather than read from /proc."""
    if importlib.util.find_spec("openvino") is None:
        return False
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


CPU_FLAGS: tuple[str, ...] = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16")


def cpu_flags() -> dict[str, bool]:
    """The instruction-set flags that decide which encoder runtime is fastest, read from
    /proc/cpuinfo (all False where there is none): printed by the benches and `rag doctor --runtime`."""
    found: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    found = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return {flag: flag in found for flag in CPU_FLAGS}


def cpu_summary() -> str:
    """One line for a benchmark's log: the CPU flags, the cores, and what `auto` runs here and why."""
    import os

    choice = explain_runtime("auto", "cpu", None)
    flags = " ".join(f"{k}={'yes' if v else 'no'}" for k, v in cpu_flags().items())
    runtime = f"{choice.runtime}{' int8' if choice.quantize else ''}"
    return f"cpu flags: {flags}; {os.cpu_count()} cores; RAG_ENCODER_RUNTIME=auto here is {runtime} ({choice.reason})"


@dataclass(frozen=True)
class RuntimeChoice:
    """What `auto` (or an explicit request) resolves to, and why."""

    runtime: str
    quantize: bool
    reason: str


def explain_runtime(requested: str, device: str, quantize: bool | None, cpu_bf16: bool | None = None) -> RuntimeChoice:
    """`choose_runtime` with its reason in words.

    `auto` is the fastest runtime measured at equal quality (SciFact nDCG@10 within 0.003 of
    fp32) whose vectors do not depend on their batch neighbours: OpenVINO in bf16 where the CPU
    computes bf16 natively (`cpu_bf16`; None asks `cpu_computes_bf16`), 3.9x torch fp32 on an AMX
    Xeon; elsewhere OpenVINO in fp32 (x1.31 ONNX Runtime fp32 on a Zen 4 forced to fp32, x1.02 on
    an AVX2-only Zen 3, 1.2x torch on an AMX Xeon), then ONNX Runtime fp32, then torch; torch on a
    GPU. `quantize` True takes ONNX Runtime's static int8 (activation scales calibrated once: a
    text's vector is the same alone and in any batch), x1.45 ONNX Runtime fp32 on the Zen 4, x1.12
    on the Zen 3, but 0.007 below fp32 in whole-corpus dense SciFact nDCG@10 (docs/speed.md), so
    never `auto`'s own choice.
    A runtime named explicitly runs without int8 unless `quantize` is True.
    """
    if requested == "auto":
        if device != "cpu":
            return RuntimeChoice("torch", bool(quantize), f"device {device}: torch is the GPU runtime")
        bf16 = cpu_computes_bf16() if cpu_bf16 is None else cpu_bf16
        if not quantize and bf16:
            return RuntimeChoice("openvino", False, "the CPU computes bf16 natively: OpenVINO bf16 is the fastest at fp32 quality")
        if quantize and importlib.util.find_spec("onnxruntime") is not None:
            return RuntimeChoice("onnx", True, "RAG_QUANTIZE=true: ONNX Runtime static int8 (batch-independent)")
        if not quantize and importlib.util.find_spec("openvino") is not None:
            return RuntimeChoice(
                "openvino", False,
                "no native bf16 on this CPU: OpenVINO fp32 (as fast as ONNX Runtime fp32 or faster, and bit-identical "
                "alone and batched); static int8 is faster (x1.12-1.45) but costs 0.007 dense nDCG@10 on SciFact, "
                "over the 0.003 budget, so only on request",
            )
        if importlib.util.find_spec("onnxruntime") is not None:
            return RuntimeChoice("onnx", bool(quantize), "no native bf16 and no openvino: ONNX Runtime" + (" static int8" if quantize else " fp32"))
        return RuntimeChoice("torch", bool(quantize), "neither openvino nor onnxruntime is installed: torch")
    if requested not in ENCODER_RUNTIMES:
        raise InvalidInput(f"unknown encoder runtime {requested!r}; use auto or one of {', '.join(ENCODER_RUNTIMES)}")
    return RuntimeChoice(requested, bool(quantize), f"RAG_ENCODER_RUNTIME={requested}" + (" with RAG_QUANTIZE" if quantize else ""))


def serving_runtime(
    requested: str, device: str, quantize: bool | None, threads: int | None, workers: int, cores: int | None = None, cpu_bf16: bool | None = None
) -> tuple[RuntimeChoice, int | None]:
    """What a server's batched query path runs, with the threads each call gets (None: the usual);
    `cores` None: the cores this process may use.

    `workers` batches are encoded at once, so each call can use `cores // workers` threads. Where
    `auto` would run OpenVINO fp32 (no native bf16) and no thread count was set, ONNX Runtime at that
    count serves more: on a 2-core AVX2 EPYC, 16 clients, /v1/search 84.5 req/s at 18.9 ms of CPU a
    search against OpenVINO's 75.1 at 22.5 (2 threads) and 63.2 (1 thread), docs/speed.md. Both fp32
    runtimes give the same vectors, so collections built with either are searched alike."""
    choice = explain_runtime(requested, device, quantize, cpu_bf16)
    if requested != "auto" or threads is not None or choice.runtime != "openvino" or choice.quantize or workers < 1:
        return choice, None
    bf16 = cpu_computes_bf16() if cpu_bf16 is None else cpu_bf16
    if bf16 or importlib.util.find_spec("onnxruntime") is None:
        return choice, None
    cores = available_cores() if cores is None else cores
    per_call = max(1, cores // workers)
    reason = (
        f"serving {workers} search batches at once on {cores} cores, no native bf16: ONNX Runtime fp32 at {per_call} "
        "thread(s) a call (x1.13 the requests/s of OpenVINO fp32 at 2 threads on a 2-core AVX2 CPU; same vectors)"
    )
    return RuntimeChoice("onnx", False, reason), per_call


def choose_runtime(requested: str, device: str, quantize: bool | None, cpu_bf16: bool | None = None) -> tuple[str, bool]:
    """(runtime, int8) for a requested runtime (`auto` or one of `ENCODER_RUNTIMES`) on `device`;
    the rule and its reasons are `explain_runtime`'s."""
    choice = explain_runtime(requested, device, quantize, cpu_bf16)
    return choice.runtime, choice.quantize


def resolve_precision(requested: str, device: str, bf16_supported: bool = False) -> str:
    """The torch dtype for RAG_PRECISION: `auto` is half precision on a GPU (bfloat16 where
    supported, else float16) and float32 on the CPU (the reader and reranker are calibrated in
    float32; the encoder's own CPU speed-up is OpenVINO's bf16, chosen by OpenVINO). bfloat16 may
    be asked for on a CPU (fast with AMX); float16 may not (torch's CPU float16 kernels are slow)."""
    if requested == "auto":
        if device == "cpu":
            return "float32"
        return "bfloat16" if bf16_supported else "float16"
    if requested == "float16" and device == "cpu":
        raise InvalidInput("RAG_PRECISION=float16 is for GPUs; on the CPU use float32 or bfloat16 (or int8: RAG_QUANTIZE)")
    return requested


def torch_precision(requested: str, device: str) -> str:
    """`resolve_precision` with bf16 support asked of torch for this device (only needed for `auto` on a GPU)."""
    bf16 = False
    if device != "cpu" and requested == "auto":
        import torch

        bf16 = bool(torch.cuda.is_bf16_supported())
    return resolve_precision(requested, device, bf16)


def encoder_dtype(runtime: str, requested: str, device: str) -> str:
    """The `dtype` that `load_encoder` gets for RAG_PRECISION on `runtime`, in every process that
    loads an encoder (the API, `rag ingest`, each Ray actor): OpenVINO takes the request as it is
    (it resolves `auto` itself, bf16 where the CPU computes it natively); torch gets the dtype
    resolved for the device; ONNX Runtime runs fp32 or int8 and ignores it."""
    if runtime == "openvino":
        return requested
    return torch_precision(requested, device)


def encoder_tokenizer(spec: EncoderSpec, cache_dir: Path | None) -> TextTokenizer:
    """The tokenizer the encoder of `spec` uses: the one saved beside its exported graph when
    there is a graph cache (no transformers, no torch), else transformers' own."""
    if cache_dir is None:
        return load_tokenizer(resolve_model_path(spec.model), spec.model)
    from indexes.encoder.export import exported_tokenizer

    return exported_tokenizer(spec, cache_dir)[0]


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
    graph (the runtime passes `RAG_HOME/models`). `dtype` is torch's, or OpenVINO's inference
    precision, where `auto` is OpenVINO's own choice (bf16 on CPUs that compute it natively)."""
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

    return OpenVinoEncoder(spec, cache_dir=cache_dir, quantize=quantize, threads=threads, device=device, precision=dtype)
