"""Export an encoder (HF model + our pooling) to ONNX once, and cache it under the data home.

Nothing is downloaded: the graph is traced from the same local weights the torch runtime loads,
with the same pooling module, so every runtime computes the recipe of `indexes.encoder.pooling`.
Three graphs per model, each made on first use and then reused:

- `model.onnx`: the plain export (standard ONNX ops; what OpenVINO reads);
- `model-ort.onnx`: ONNX Runtime's transformer fusions (attention, layer norm, GELU) applied;
- `model-ort-int8-static2-<calibration hash>.onnx`: that graph with int8 MatMuls (QDQ; those fed
  by GELU stay fp32), per-channel weight scales and activation scales calibrated once on
  `calibration.txt` (the project's own prose, shipped in the package), so a text's vector does
  not depend on what it is batched with (ONNX Runtime's dynamic quantisation picks activation
  scales per batch tensor, which moved a query's vector to cosine 0.990 in a batch of 32);

and `tokenizer/`: the tokenizer transformers builds for the model, with its hidden size and
position limit (`exported_tokenizer`), so that processes running a graph never import
transformers or torch.

The cache folder is named by a fingerprint of the model files and the recipe, so a changed
checkpoint or pooling is exported again rather than served stale. Writers hold a file lock and
rename finished files into place, so concurrent processes never read half a model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Literal

from indexes.encoder.spec import EncoderSpec, model_shape, resolve_model_path
from indexes.encoder.tokenizer import TextTokenizer, load_tokenizer
from indexes.errors import ModelLoadError

log = logging.getLogger(__name__)

Variant = Literal["plain", "ort", "ort-int8"]
CALIBRATION = Path(__file__).with_name("calibration.txt")
# Bump when the export recipe changes, so old caches are not reused.
EXPORT_VERSION = 1
OPSET = 17


def _fingerprint(spec: EncoderSpec, path: str) -> str:
    parts: dict[str, object] = {
        "version": EXPORT_VERSION,
        "model": spec.model,
        "path": path,
        "pooling": spec.pooling,
        "normalize": spec.normalize,
    }
    folder = Path(path)
    if folder.is_dir():
        parts["files"] = sorted(
            (f.name, f.stat().st_size, f.stat().st_mtime_ns)
            for f in folder.iterdir()
            if f.is_file() and (f.suffix in (".json", ".safetensors", ".bin") or f.name == "vocab.txt")
        )
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def export_folder(spec: EncoderSpec, cache_dir: Path) -> Path:
    """Where this model's exported graphs live: `cache_dir/onnx/<name>-<fingerprint>/`."""
    path = resolve_model_path(spec.model)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(spec.model).name or "model")[:60]
    return Path(cache_dir) / "onnx" / f"{slug}-{spec.pooling}{'-norm' if spec.normalize else ''}-{_fingerprint(spec, path)}"


def exported_model(spec: EncoderSpec, cache_dir: Path, variant: Variant) -> Path:
    """The path of the `variant` graph for `spec`, exporting (and optimising) it if not cached."""
    from filelock import FileLock

    folder = export_folder(spec, cache_dir)
    target = folder / _file_name(variant)
    if target.is_file():
        return target
    # The graph this variant is derived from, made first (each step takes the lock itself).
    source = {"plain": None, "ort": "plain", "ort-int8": "ort"}[variant]
    source_path = exported_model(spec, cache_dir, source) if source else None  # type: ignore[arg-type]
    # The calibration tokenizer is saved under the same lock, so it is fetched before taking it.
    tokenizer = exported_tokenizer(spec, cache_dir)[0] if variant == "ort-int8" else None
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if target.is_file():  # another process made it while we waited
            return target
        if source_path is None:
            _export_plain(spec, target)
        elif variant == "ort":
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(resolve_model_path(spec.model))
            _optimise_for_ort(source_path, target, int(config.num_attention_heads), int(config.hidden_size))
        else:
            assert tokenizer is not None
            _quantise_int8(source_path, target, tokenizer, spec.max_tokens)
        (folder / "export.json").write_text(
            json.dumps({"model": spec.model, "pooling": spec.pooling, "normalize": spec.normalize,
                        "export_version": EXPORT_VERSION, "opset": OPSET}, indent=2)
        )
    return target


def exported_tokenizer(spec: EncoderSpec, cache_dir: Path) -> tuple[TextTokenizer, tuple[int, int]]:
    """The model's tokenizer and (hidden size, position limit), saved beside its graphs by the
    first process that needs them, so that later ones import neither transformers nor torch."""
    from filelock import FileLock

    folder = export_folder(spec, cache_dir)
    saved = folder / "tokenizer"
    if not (saved / "shape.json").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder) + ".lock"):
            if not (saved / "shape.json").is_file():
                tmp = Path(tempfile.mkdtemp(dir=folder, prefix="tokenizer.", suffix=".tmp"))
                try:
                    load_tokenizer(resolve_model_path(spec.model), spec.model).save(tmp)
                    (tmp / "shape.json").write_text(json.dumps(model_shape(spec)), encoding="utf-8")
                    shutil.rmtree(saved, ignore_errors=True)  # what a copy left half-made
                    os.replace(tmp, saved)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
    dim, limit = json.loads((saved / "shape.json").read_text(encoding="utf-8"))
    return TextTokenizer.load(saved), (int(dim), int(limit))


def _atomic_target(target: Path) -> Path:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name + ".", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o644)
    return Path(tmp)


def _export_plain(spec: EncoderSpec, target: Path) -> None:
    try:
        import torch
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # "Loading weights" bars would break one-line CLI output
    except ImportError as exc:  # pragma: no cover - install problem
        raise ModelLoadError(f"exporting the encoder to ONNX needs torch and transformers: {exc}") from exc
    from indexes.encoder.pooling import PooledModel

    path = resolve_model_path(spec.model)
    tokenizer = load_tokenizer(path, spec.model)
    try:
        # Eager attention exports as plain MatMul/Softmax, which ONNX Runtime fuses into one op.
        model = AutoModel.from_pretrained(path, attn_implementation="eager").eval()
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load embedding model {spec.model!r} to export it: {exc}") from exc
    ids = tokenizer.ids(["an example passage to trace", "short"], spec.max_tokens)
    width = max(len(row) for row in ids)
    input_ids = torch.tensor([row + [tokenizer.pad_id] * (width - len(row)) for row in ids])
    attention_mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids])
    dynamic = {0: "batch", 1: "tokens"}
    tmp = _atomic_target(target)
    log.info("exporting %s to ONNX (once) at %s", spec.model, target)
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                PooledModel(model, spec.pooling, spec.normalize),
                (input_ids, attention_mask),
                str(tmp),
                input_names=["input_ids", "attention_mask"],
                output_names=["embedding"],
                dynamic_axes={"input_ids": dynamic, "attention_mask": dynamic, "embedding": {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _optimise_for_ort(source: Path, target: Path, num_heads: int, hidden_size: int) -> None:
    from onnxruntime.transformers.optimizer import optimize_model

    tmp = _atomic_target(target)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            optimised = optimize_model(str(source), model_type="bert", num_heads=num_heads, hidden_size=hidden_size)
        fused = {k: v for k, v in optimised.get_fused_operator_statistics().items() if v}
        log.info("ONNX Runtime fusions for %s: %s", source.parent.name, fused)
        optimised.save_model_to_file(str(tmp))
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _file_name(variant: Variant) -> str:
    if variant == "ort-int8":
        # Named by the calibration text too: new calibration text, new graph.
        return f"model-ort-int8-static2-{hashlib.sha256(CALIBRATION.read_bytes()).hexdigest()[:12]}.onnx"
    return {"plain": "model.onnx", "ort": "model-ort.onnx"}[variant]


def calibration_texts() -> list[str]:
    """The texts the int8 activation scales are calibrated on: one passage per line of
    `calibration.txt` (the examples corpus and the README's prose, written by this project)."""
    return [line for line in CALIBRATION.read_text(encoding="utf-8").splitlines() if line.strip()]


def _typed_for_quantisation(source: Path, target: Path) -> list[str]:
    """Copy of the fused graph with a float type on every untyped output of ONNX Runtime's fused
    ops (Attention, SkipLayerNormalization, BiasGelu have no ONNX type inference), without which
    `quantize_static` silently leaves every MatMul fed by them in fp32 (weights only rounded).
    Returns the MatMuls to keep in fp32: those fed by GELU, whose activations span a range one
    per-tensor scale cannot hold (quantising them too took the cosine to fp32 from 0.997 to 0.95)."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.shape_inference.infer_shapes(onnx.load(str(source)))
    graph = model.graph
    typed = {v.name for v in [*graph.value_info, *graph.input, *graph.output]} | {i.name for i in graph.initializer}
    float_ops = {"Attention", "SkipLayerNormalization", "BiasGelu", "FastGelu", "Gelu", "LayerNormalization", "MatMul", "Add", "Mul", "Div", "Reshape"}
    for node in graph.node:
        if node.op_type in float_ops:
            for name in node.output:
                if name and name not in typed:
                    graph.value_info.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    producer = {name: node.op_type for node in graph.node for name in node.output}
    keep_fp32 = [n.name for n in graph.node if n.op_type == "MatMul" and producer.get(n.input[0], "").endswith("Gelu")]
    onnx.save(model, str(target))
    return keep_fp32


def _quantise_int8(source: Path, target: Path, tokenizer: TextTokenizer, max_tokens: int) -> None:
    """Static QDQ int8 of the MatMuls: every scale is a constant of the graph, so a row's output
    depends only on that row. Weights per channel with 7-bit range (`reduce_range`): CPUs without
    VNNI multiply u8 x s8 pairs into saturating int16 sums, which 8-bit weights can overflow."""
    import numpy as np
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    ids = tokenizer.ids(calibration_texts(), max_tokens)

    class Reader(CalibrationDataReader):
        """One text per run: no padding in the observed ranges."""

        def __init__(self) -> None:
            self.rows = iter(ids)

        def get_next(self) -> dict[str, np.ndarray] | None:
            row = next(self.rows, None)
            if row is None:
                return None
            return {"input_ids": np.array([row], dtype=np.int64), "attention_mask": np.ones((1, len(row)), dtype=np.int64)}

    tmp = _atomic_target(target)
    typed = _atomic_target(target.with_name(target.name + ".typed"))
    log.info("quantising %s to int8 (once), calibrated on %d passages", source.parent.name, len(ids))
    try:
        keep_fp32 = _typed_for_quantisation(source, typed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_static(
                str(typed),
                str(tmp),
                Reader(),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=["MatMul"],
                nodes_to_exclude=keep_fp32,
                per_channel=True,  # per-tensor weight scales cost MiniLM far more cosine
                reduce_range=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={
                    "DefaultTensorType": onnx.TensorProto.FLOAT,
                    # Fold each run's ranges into the running min/max every few runs: bounded memory.
                    "CalibMaxIntermediateOutputs": 4,
                },
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
        typed.unlink(missing_ok=True)
