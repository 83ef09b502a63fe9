"""The transformer behind the reader (span logits) and the support verifier (class logits), on one
of two runtimes: ONNX Runtime for exported folders (the shipped models; no torch, no transformers)
or torch for Hugging Face folders and hub ids (GPUs, models nobody exported).

Both give the caller a `tokenizers` backend, so windowing and decoding are one code path whatever
runs the model. `runtime="auto"` is ONNX Runtime when the folder is an export, else torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from tokenizers import Tokenizer

from indexes.errors import InvalidInput, MissingDependency, ModelLoadError
from rag.exported import ExportedModel, is_exported
from rag.shipped import resolve_model

HeadRuntime = Literal["auto", "onnx", "torch"]
HEAD_RUNTIMES: tuple[str, ...] = ("auto", "onnx", "torch")
Task = Literal["question-answering", "text-classification"]


class Head(Protocol):
    """A model that maps unpadded token rows to per-row output arrays."""

    runtime: str
    inputs: list[str]
    pad_id: int
    cls_id: int | None
    max_length: int  # the longest input the model takes (tokenizer limit and position embeddings)

    def tokenizer(self) -> Tokenizer: ...

    def run(self, rows: Sequence[dict[str, list[int]]], batch_tokens: int = 16384) -> list[list[np.ndarray]]: ...


class OnnxHead:
    """An exported folder on ONNX Runtime (CPU); equal-length groups, so results do not depend on the batch."""

    runtime = "onnx"

    def __init__(self, folder: str, task: Task, threads: int | None = None) -> None:
        self.model = ExportedModel(folder, threads=threads, task=task)
        self.inputs = self.model.inputs
        self.pad_id = self.model.pad_id
        self.cls_id = self.model.cls_id
        self.max_length = self.model.max_length
        self.labels: dict[str, str] = dict(self.model.meta.get("labels") or {})

    def tokenizer(self) -> Tokenizer:
        return self.model.tokenizer()

    def run(self, rows: Sequence[dict[str, list[int]]], batch_tokens: int = 16384) -> list[list[np.ndarray]]:
        return self.model.run(rows, batch_tokens)


class TorchHead:
    """A Hugging Face model in torch (the reference; any device), batches padded to their longest row."""

    runtime = "torch"

    def __init__(self, path: str, task: Task, device: str = "cpu", name: str | None = None, threads: int | None = None) -> None:
        try:
            import torch
            from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification, AutoTokenizer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        except ImportError as exc:  # pragma: no cover - install problem
            raise MissingDependency(f"running {name or path!r} on torch needs torch and transformers: {exc}") from exc
        from indexes.encoder import set_threads

        set_threads(threads)
        auto = AutoModelForQuestionAnswering if task == "question-answering" else AutoModelForSequenceClassification
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            # weights may be stored in fp16 (the support verifier); CPU inference wants float32
            self.model = auto.from_pretrained(path, dtype=torch.float32)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"cannot load {name or path!r} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from exc
        if not getattr(tokenizer, "is_fast", False):
            raise ModelLoadError(f"{name or path!r} has no fast tokenizer; offsets need one")
        if tokenizer.padding_side != "right":
            raise ModelLoadError(f"{name or path!r} pads on the left; question/claim-first windows need right padding")
        self.model.eval().to(device)
        self._torch = torch
        self._backend = tokenizer.backend_tokenizer.to_str()
        self.device = device
        self.inputs = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tokenizer.model_input_names]
        self.pad_id = int(tokenizer.pad_token_id or 0)
        self.cls_id = None if tokenizer.cls_token_id is None else int(tokenizer.cls_token_id)
        self.max_length = min(int(tokenizer.model_max_length), int(getattr(self.model.config, "max_position_embeddings", 512) or 512))
        self.outputs = ["start_logits", "end_logits"] if task == "question-answering" else ["logits"]
        self.labels = {str(k): v for k, v in (getattr(self.model.config, "id2label", None) or {}).items()}

    def tokenizer(self) -> Tokenizer:
        tokenizer = Tokenizer.from_str(self._backend)
        tokenizer.no_truncation()
        tokenizer.no_padding()
        return tokenizer

    def run(self, rows: Sequence[dict[str, list[int]]], batch_tokens: int = 16384) -> list[list[np.ndarray]]:
        torch = self._torch
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
        out: list[list[np.ndarray]] = [[] for _ in rows]

        def forward(batch: list[int]) -> None:
            width = max(len(rows[i]["input_ids"]) for i in batch)
            tensors = {}
            for name in self.inputs:
                pad = self.pad_id if name == "input_ids" else 0
                padded = [list(rows[i][name]) + [pad] * (width - len(rows[i][name])) for i in batch]
                tensors[name] = torch.tensor(padded, dtype=torch.long, device=self.device)
            with torch.inference_mode():
                result = self.model(**tensors)
            arrays = [getattr(result, o).float().cpu().numpy() for o in self.outputs]
            per_token = self.outputs != ["logits"]
            for row, i in enumerate(batch):
                n = len(rows[i]["input_ids"])
                out[i] = [a[row, :n] if per_token else a[row] for a in arrays]

        batch: list[int] = []
        for i in order:
            width = len(rows[i]["input_ids"])
            if batch and (len(batch) + 1) * width > batch_tokens:
                forward(batch)
                batch = []
            batch.append(i)
        if batch:
            forward(batch)
        return out


def load_head(model: str, task: Task, runtime: str = "auto", *, device: str = "cpu", threads: int | None = None) -> OnnxHead | TorchHead:
    """The model named `model` (a shipped name, a folder or a hub id) on `runtime`."""
    if runtime not in HEAD_RUNTIMES:
        raise InvalidInput(f"unknown model runtime {runtime!r}; use auto, onnx or torch")
    path = resolve_model(model)
    exported = is_exported(path)
    if runtime == "auto":
        runtime = "onnx" if exported and not device.startswith("cuda") else "torch"
    if runtime == "onnx":
        if not exported:
            raise ModelLoadError(
                f"{model!r} is not an ONNX export: run it with runtime torch, or export it first "
                f"(python scripts/export_models.py --model {model} --task {task} --out FOLDER)"
            )
        if device.startswith("cuda"):
            raise InvalidInput("exported models run on the CPU (ONNX Runtime); use runtime torch on a GPU")
        return OnnxHead(path, task, threads)
    if exported:
        raise ModelLoadError(f"{model!r} is an ONNX export and holds no torch weights; use runtime auto or onnx")
    if Path(path).is_file():
        raise ModelLoadError(f"{model!r} is a file; give a model folder or a hub id")
    return TorchHead(path, task, device, name=model, threads=threads)


def torch_module(head: Any) -> Any:
    """The torch module behind `head` (to cast it to a GPU dtype), or None on ONNX Runtime."""
    return head.model if isinstance(head, TorchHead) else None
