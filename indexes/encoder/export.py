"""Export an encoder (HF model + our pooling) to ONNX once, and cache it under the data home.

Nothing is downloaded: the graph is traced from the same local weights the torch runtime loads,
with the same pooling module, so every runtime computes the recipe of `indexes.encoder.pooling`.
Three graphs per model, each made on first use and then reused:

- `model.onnx`: the plain export (standard ONNX ops; what OpenVINO reads);
- `model-ort.onnx`: ONNX Runtime's transformer fusions (attention, layer norm, GELU) applied;
- `model-ort-int8.onnx`: that graph with int8 weights, per-channel scales, dynamic activations;

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
_FILES: dict[str, str] = {"plain": "model.onnx", "ort": "model-ort.onnx", "ort-int8": "model-ort-int8.onnx"}
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
    target = folder / _FILES[variant]
    if target.is_file():
        return target
    # The graph this variant is derived from, made first (each step takes the lock itself).
    source = {"plain": None, "ort": "plain", "ort-int8": "ort"}[variant]
    source_path = exported_model(spec, cache_dir, source) if source else None  # type: ignore[arg-type]
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
            _quantise_int8(source_path, target)
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


def _quantise_int8(source: Path, target: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = _atomic_target(target)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(
                str(source),
                str(tmp),
                per_channel=True,  # per-tensor scales cost MiniLM far more cosine
                weight_type=QuantType.QInt8,
                # Fused contrib ops (Attention, SkipLayerNormalization) have no inferred output type.
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
