"""A model exported by `rag.onnx_export`, run with ONNX Runtime and `tokenizers` (no torch, no
transformers): its files are checked against the folder's manifest before the graph is opened.

Windows are run in groups of equal length, never padded to a neighbour's: with fp32 compute that
makes a window's logits bit-identical whatever else is in its batch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from indexes.encoder import available_cores
from indexes.errors import MissingDependency, ModelLoadError

MANIFEST = "manifest.json"


def is_exported(folder: str | Path) -> bool:
    """Whether `folder` holds an export of ours (graph, tokenizer, metadata, manifest)."""
    path = Path(folder).expanduser()
    return all((path / name).is_file() for name in ("model.onnx", "model.json", "tokenizer.json", MANIFEST))


def verify_manifest(folder: Path) -> None:
    """Every file the manifest lists has its size and sha256: a truncated copy or an edited graph
    is refused before ONNX Runtime reads it."""
    from rag.models import file_sha256

    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    for name, expected in manifest.items():
        path = folder / name
        if not path.is_file():
            raise ModelLoadError(f"{folder} is incomplete: {name} is missing (reinstall, or export it again with scripts/export_models.py)")
        if path.stat().st_size != expected["size"] or file_sha256(path) != expected["sha256"]:
            raise ModelLoadError(f"{path} does not match its checksum in {folder / MANIFEST}: the file is damaged or was changed")


class ExportedModel:
    """The graph, tokenizer and metadata of one exported folder; `run` is thread-safe."""

    def __init__(self, folder: str | Path, *, threads: int | None = None, task: str | None = None) -> None:
        self.folder = Path(folder).expanduser()
        if not is_exported(self.folder):
            raise ModelLoadError(f"{self.folder} is not an exported model folder (model.onnx, model.json, tokenizer.json, {MANIFEST})")
        verify_manifest(self.folder)
        self.meta: dict[str, Any] = json.loads((self.folder / "model.json").read_text(encoding="utf-8"))
        if task is not None and self.meta.get("task") != task:
            raise ModelLoadError(f"{self.folder} holds a {self.meta.get('task')} model, not a {task} one")
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - install problem
            raise MissingDependency(f"exported models run on onnxruntime: pip install onnxruntime ({exc})") from exc
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = max(1, int(threads or available_cores()))
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(self.folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
        self.inputs: list[str] = list(self.meta["inputs"])
        self.outputs: list[str] = list(self.meta["outputs"])
        self.pad_id = int(self.meta.get("pad_id", 0))
        self.cls_id: int | None = self.meta.get("cls_id")
        self.max_length = min(int(self.meta["model_max_length"]), int(self.meta["max_position_embeddings"]))

    def tokenizer(self) -> Tokenizer:
        """A fresh backend (callers may set truncation on it: a backend's settings are its state)."""
        tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        tokenizer.no_truncation()
        tokenizer.no_padding()
        return tokenizer

    def run(self, rows: Sequence[dict[str, list[int]]], batch_tokens: int = 16384) -> list[list[np.ndarray]]:
        """The outputs for each row of features (unpadded token lists), in order: one array per
        output name, cut to the row's length where the output is per token."""
        out: list[list[np.ndarray]] = [[] for _ in rows]
        by_length: dict[int, list[int]] = {}
        for i, row in enumerate(rows):
            by_length.setdefault(len(row["input_ids"]), []).append(i)
        for width, members in sorted(by_length.items()):
            per_batch = max(1, batch_tokens // max(width, 1))
            for first in range(0, len(members), per_batch):
                batch = members[first : first + per_batch]
                feed = {name: np.asarray([rows[i][name] for i in batch], dtype=np.int64) for name in self.inputs}
                results = self.session.run(self.outputs, feed)
                for row_number, i in enumerate(batch):
                    out[i] = [np.asarray(r[row_number], dtype=np.float32) for r in results]
        return out
