"""Export a question-answering or (claim, passage) classification model to an ONNX folder that runs
without torch or transformers: `model.onnx`, the tokenizer, `model.json` and a checksum manifest.

The shipped reader and verifier (`rag.shipped`) are made by `scripts/export_models.py` with this
module; it is the only place on their path that needs torch. Weights may be stored as int8 with
one scale per output channel, dequantised inside the graph (`DequantizeLinear` feeding fp32
`MatMul`; the word-embedding rows are gathered as int8 and scaled after the gather). The compute
stays fp32, so unlike ONNX Runtime's dynamic quantisation (activation scales per batch tensor) a
question's logits do not depend on what else is in its batch.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np

from indexes.encoder import resolve_model_path
from indexes.encoder.tokenizer import TextTokenizer
from indexes.errors import MissingDependency, ModelLoadError
from rag.models import file_sha256

log = logging.getLogger(__name__)

Task = Literal["question-answering", "text-classification"]
OPSET = 17
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# MatMul weights with fewer elements stay fp32 (the span head: 384 x 2): too small to matter for size.
_MIN_QUANTISED = 4096
_OUTPUTS: dict[str, list[str]] = {"question-answering": ["start_logits", "end_logits"], "text-classification": ["logits"]}


def export(source: str, target: Path, task: Task, *, int8: bool = True, name: str | None = None) -> dict[str, Any]:
    """Export the HF model `source` (folder or cached hub id) for `task` into the folder `target`
    (replaced atomically) and return its `model.json`."""
    try:
        import torch
        from transformers import AutoConfig, AutoModelForQuestionAnswering, AutoModelForSequenceClassification, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError as exc:  # pragma: no cover - install problem
        raise MissingDependency(f"exporting a model to ONNX needs torch and transformers: {exc}") from exc
    path = resolve_model_path(source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        config = AutoConfig.from_pretrained(path)
        auto = AutoModelForQuestionAnswering if task == "question-answering" else AutoModelForSequenceClassification
        # fp16 checkpoints (the verifier) are computed in fp32 on the CPU; eager attention exports as plain ops
        model = auto.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"cannot load {source!r} to export it: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from exc
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(f"{source!r} has no fast tokenizer; offsets need one")
    inputs = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tokenizer.model_input_names]
    outputs = _OUTPUTS[task]
    meta: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "name": name or Path(path).name,
        "task": task,
        "source": Path(path).name if Path(path).is_dir() else source,  # no local paths in a shipped file
        "weights": "int8 per output channel, fp32 compute" if int8 else "fp32",
        "inputs": inputs,
        "outputs": outputs,
        "model_max_length": int(min(int(tokenizer.model_max_length), 1 << 20)),
        "max_position_embeddings": int(getattr(config, "max_position_embeddings", 512) or 512),
        "pad_id": int(tokenizer.pad_token_id or 0),
        "cls_id": None if tokenizer.cls_token_id is None else int(tokenizer.cls_token_id),
        "padding_side": str(tokenizer.padding_side),
        "labels": {str(k): v for k, v in (getattr(config, "id2label", None) or {}).items()},
    }

    class Heads(torch.nn.Module):
        """The model's logits as a tuple (ModelOutput does not trace)."""

        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *args: Any) -> Any:
            result = self.inner(**dict(zip(inputs, args)))
            return tuple(getattr(result, o) for o in outputs)

    example = tokenizer(["a question?", "another question"], ["the context it is asked about", "short"], padding=True, return_tensors="pt")
    dynamic = {0: "batch", 1: "tokens"}
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=target.parent, prefix=target.name + ".", suffix=".tmp"))
    try:
        plain = work / "plain.onnx"
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                Heads(model),
                tuple(example[n] for n in inputs),
                str(plain),
                input_names=inputs,
                output_names=outputs,
                dynamic_axes={**{n: dynamic for n in inputs}, **{o: dynamic if task == "question-answering" else {0: "batch"} for o in outputs}},
                opset_version=OPSET,
                dynamo=False,
            )
        import onnx

        graph = onnx.load(str(plain))
        if int8:
            quantise_weights(graph)
        onnx.save(graph, str(work / "model.onnx"))
        plain.unlink()
        TextTokenizer.from_transformers(tokenizer).save(work)
        (work / "model.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        write_manifest(work)
        os.chmod(work, 0o755)
        if target.exists():
            shutil.rmtree(target)
        os.replace(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("exported %s to %s", source, target)
    return meta


def quantise_weights(model: Any) -> dict[str, int]:
    """Rewrite `model` (an onnx ModelProto) in place: every large MatMul weight becomes int8 with a
    per-output-channel scale and a `DequantizeLinear`, and a Gather over an embedding table gathers
    int8 rows and multiplies them by their row's scale. Returns counts of what was rewritten."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    counts = {"matmul": 0, "gather": 0}
    new_nodes = []
    for node in graph.node:
        weight = node.input[1] if node.op_type == "MatMul" and len(node.input) == 2 else None
        table = node.input[0] if node.op_type == "Gather" and node.input else None
        name = weight or table or ""
        init = initializers.get(name)
        if (
            init is None
            or init.data_type != TensorProto.FLOAT
            or len(init.dims) != 2
            or int(np.prod(init.dims)) < _MIN_QUANTISED
            or consumers.get(name, 0) != 1
            or (table is not None and any(a.name == "axis" and a.i != 0 for a in node.attribute))
        ):
            new_nodes.append(node)
            continue
        values = numpy_helper.to_array(init).astype(np.float32)
        axis = 1 if weight else 0  # MatMul weights are [in, out]: one scale per output column; tables one per row
        q, scale = _int8(values, axis)
        graph.initializer.remove(init)
        graph.initializer.extend([numpy_helper.from_array(q, name + "_int8"), numpy_helper.from_array(scale, name + "_scale")])
        if weight:
            new_nodes.append(helper.make_node("DequantizeLinear", [name + "_int8", name + "_scale"], [name + "_dq"], axis=1, name=name + "_dq"))
            node.input[1] = name + "_dq"
            new_nodes.append(node)
            counts["matmul"] += 1
        else:
            ids, out = node.input[1], node.output[0]
            new_nodes += [
                helper.make_node("Gather", [name + "_int8", ids], [out + "_q"], axis=0, name=out + "_gather_q"),
                helper.make_node("Gather", [name + "_scale", ids], [out + "_s"], axis=0, name=out + "_gather_s"),
                helper.make_node("Cast", [out + "_q"], [out + "_f"], to=TensorProto.FLOAT, name=out + "_cast"),
                helper.make_node("Unsqueeze", [out + "_s", name + "_last"], [out + "_s1"], name=out + "_unsqueeze"),
                helper.make_node("Mul", [out + "_f", out + "_s1"], [out], name=out + "_scale"),
            ]
            graph.initializer.append(numpy_helper.from_array(np.array([-1], dtype=np.int64), name + "_last"))
            counts["gather"] += 1
    del graph.node[:]
    graph.node.extend(new_nodes)
    return counts


def _int8(values: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 with one scale per slice along `axis` (max |w| maps to 127)."""
    reduce = 1 - axis
    scale = np.abs(values).max(axis=reduce) / 127.0
    scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
    shaped = scale[None, :] if axis == 1 else scale[:, None]
    q = np.clip(np.rint(values / shaped), -127, 127).astype(np.int8)
    return q, scale


def write_manifest(folder: Path) -> dict[str, dict[str, Any]]:
    """`manifest.json`: size and sha256 of every other file of the folder."""
    files = {
        f.name: {"size": f.stat().st_size, "sha256": file_sha256(f)}
        for f in sorted(Path(folder).iterdir())
        if f.is_file() and f.name != MANIFEST
    }
    (Path(folder) / MANIFEST).write_text(json.dumps(files, indent=2) + "\n", encoding="utf-8")
    return files
