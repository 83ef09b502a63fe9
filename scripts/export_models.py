"""Rebuild the shipped reader and support verifier (rag/shipped_models/) from their HF checkpoints,
or export any other question-answering / (claim, passage) classification model the same way.

    python scripts/export_models.py                      # both shipped models, from ../shared/models
    python scripts/export_models.py --model DIR --task question-answering --out OUT [--fp32] [--name NAME]

The shipped judge is trained by `rag train-verifier` (recipe in docs/judge.md); put its checkpoint
at SOURCES/verifier-minilm-l6-support-v2, or export it with --model/--out/--name.

Needs torch, transformers and onnx (the dev install); the exported folders need neither torch nor
transformers to run. Weights are int8 per output channel, computed in fp32 (`rag.onnx_export`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rag.onnx_export import export  # noqa: E402
from rag.shipped import READER, SHIPPED_DIR, VERIFIER  # noqa: E402

SOURCES = REPO.parent / "shared" / "models"
SHIPPED_TASKS = {READER: "question-answering", VERIFIER: "text-classification"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="HF folder or cached hub id (default: both shipped models from --sources)")
    parser.add_argument("--task", choices=["question-answering", "text-classification"])
    parser.add_argument("--out", type=Path, help="the folder to write (replaced)")
    parser.add_argument("--sources", type=Path, default=SOURCES, help="where the shipped models' HF checkpoints are")
    parser.add_argument("--fp32", action="store_true", help="keep fp32 weights (about 4x larger)")
    parser.add_argument("--name", help="the model's name in model.json (default: the --model folder's name)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.model:
        if not (args.task and args.out):
            parser.error("--model needs --task and --out")
        export(args.model, args.out, args.task, int8=not args.fp32, name=args.name)
        return
    for name, task in SHIPPED_TASKS.items():
        meta = export(str(args.sources / name), SHIPPED_DIR / name, task, int8=not args.fp32, name=name)  # type: ignore[arg-type]
        meta_source = SHIPPED_DIR / name / "model.json"
        print(f"{name}: {meta['weights']}, {sum(f.stat().st_size for f in (SHIPPED_DIR / name).iterdir()) / 1e6:.1f} MB ({meta_source})")


if __name__ == "__main__":
    main()
