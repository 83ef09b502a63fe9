"""The reader and the support verifier that come with the package, so that an offline machine with
no model folder beside it answers and checks answers. They are ONNX exports (`rag.onnx_export`,
rebuilt by `scripts/export_models.py`) with int8 weights, stored under `rag/shipped_models/`.
"""

from __future__ import annotations

from pathlib import Path

SHIPPED_DIR = Path(__file__).resolve().parent / "shipped_models"
READER = "reader-minilm-l6-squad-na"  # extractive QA with a no-answer head (SQuAD 1.1 + no-answer pairs)
VERIFIER = "verifier-minilm-l6-support-v2"  # (claim, passage) -> supported, label 1; trained by `rag train-verifier`
SHIPPED: tuple[str, ...] = (READER, VERIFIER)


def shipped_path(name: str) -> Path:
    return SHIPPED_DIR / name


def resolve_model(name: str) -> str:
    """A local folder wins; then a shipped model's name means its folder; anything else is
    returned unchanged (a hub id, or a packaged model that `resolve_model_path` knows)."""
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    if name in SHIPPED and shipped_path(name).is_dir():
        return str(shipped_path(name))
    from indexes.encoder import resolve_model_path

    return resolve_model_path(name)
