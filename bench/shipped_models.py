"""The shipped reader and verifier (int8 weights on ONNX Runtime) against their fp32 checkpoints:
reader EM/F1 on held-out SQuAD dev articles (13-24: the thresholds were chosen on 1-12), on torch
fp32, ONNX fp32 and the shipped ONNX int8; verifier P(supported) differences on (claim, passage)
pairs built from the same articles.

    python bench/shipped_models.py                         # 6 paragraphs per article, 300 pairs
    python bench/shipped_models.py --paragraphs 0 --pairs 600   # every paragraph

Needs ../shared (the checkpoints and the dev articles) and torch (the references).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rag.evaluation.squad import evaluate_reader, read_squad  # noqa: E402
from rag.onnx_export import export  # noqa: E402
from rag.reader import ExtractiveReader  # noqa: E402
from rag.shipped import READER, VERIFIER  # noqa: E402
from rag.verifiers.nli import NLIVerifier  # noqa: E402

SHARED = REPO.parent / "shared"
DEV = SHARED / "data" / "squad" / "squad-v1.1-dev-articles-01-24.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paragraphs", type=int, default=6, help="first N paragraphs of each held-out article (0: all)")
    parser.add_argument("--pairs", type=int, default=300, help="verifier pairs (half from the answer's paragraph)")
    args = parser.parse_args()
    questions = [q for q in read_squad(DEV, paragraphs_per_article=args.paragraphs or None) if q.article >= 12]
    print(f"held-out questions: {len(questions)} (articles 13-24, {args.paragraphs or 'all'} paragraphs each)")
    with tempfile.TemporaryDirectory(prefix="rag-shipped-") as scratch:
        reader_fp32 = Path(scratch) / "reader-fp32"
        verifier_fp32 = Path(scratch) / "verifier-fp32"
        export(str(SHARED / "models" / READER), reader_fp32, "question-answering", int8=False)
        export(str(SHARED / "models" / VERIFIER), verifier_fp32, "text-classification", int8=False)
        readers = {
            "torch fp32 (checkpoint)": ExtractiveReader(str(SHARED / "models" / READER), runtime="torch"),
            "onnx fp32": ExtractiveReader(str(reader_fp32)),
            "onnx int8 (shipped)": ExtractiveReader(READER),
        }
        predictions: dict[str, list[str]] = {}
        for name, reader in readers.items():
            started = time.perf_counter()
            result = evaluate_reader(reader, questions)
            spans = reader.read_batch([(q.question, [q.context]) for q in questions[:64]])
            predictions[name] = [s[0].proposal for s in spans]
            print(f"  {name:26s} EM {result['exact_match']:.2f}  F1 {result['f1']:.2f}  ({time.perf_counter() - started:.0f} s)")
        base = predictions["torch fp32 (checkpoint)"]
        for name, answers in predictions.items():
            same = sum(a == b for a, b in zip(answers, base))
            print(f"  {name:26s} same answer text as torch on {same}/{len(base)} of the first questions")

        rng = random.Random(0)
        paragraphs = sorted({q.context for q in questions})
        pairs = []
        for q in rng.sample(questions, min(args.pairs, len(questions))):
            claim = f"{q.question} {q.answers[0]}."
            other = rng.choice(paragraphs)
            pairs.append((claim, q.context if len(pairs) % 2 == 0 else other))
        verifiers = {
            "torch fp32": NLIVerifier(str(SHARED / "models" / VERIFIER), runtime="torch"),
            "onnx fp32": NLIVerifier(str(verifier_fp32)),
            "onnx int8 (shipped)": NLIVerifier(VERIFIER),
        }
        probs = {name: np.asarray(v.probabilities(pairs)) for name, v in verifiers.items()}
        reference = probs["torch fp32"]
        print(f"verifier: {len(pairs)} (claim, passage) pairs, P(supported) against torch fp32")
        for name, values in probs.items():
            diff = np.abs(values - reference)
            flips = int(((values >= 0.5) != (reference >= 0.5)).sum())
            print(f"  {name:26s} max |diff| {diff.max():.4f}  mean {diff.mean():.5f}  verdicts flipped at 0.5: {flips}")


if __name__ == "__main__":
    main()
