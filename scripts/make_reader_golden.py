"""Reference answers of the transformers 4.57 `pipeline("question-answering")` for the reader's parity test.

Run it under the reference venv (transformers 4.57.x; the pipeline is gone in 5.x):
    python3 -m venv .ref-venv && .ref-venv/bin/pip install torch==2.13.0 "transformers==4.57.*"
    HF_HUB_OFFLINE=1 .ref-venv/bin/python scripts/make_reader_golden.py
Default pipeline settings, one question against its own paragraph, the first three paragraphs of
each of the 24 dev articles (518 questions). Writes tests/golden/reader-minilm-l6-squad.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # rag.evaluation.squad is standard library only

from rag.evaluation.squad import read_squad, score_predictions  # noqa: E402

SHARED = ROOT.parent / "shared"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(SHARED / "models" / "reader-minilm-l6-squad"))
    parser.add_argument("--squad", default=str(SHARED / "data" / "squad" / "squad-v1.1-dev-articles-01-24.json"))
    parser.add_argument("--paragraphs-per-article", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "tests" / "golden" / "reader-minilm-l6-squad.json"))
    args = parser.parse_args()

    import torch
    import transformers
    from transformers import pipeline

    torch.set_num_threads(2)
    qa = pipeline("question-answering", model=args.model, tokenizer=args.model, device=-1)
    questions = read_squad(args.squad, paragraphs_per_article=args.paragraphs_per_article)
    started = time.perf_counter()
    answers: dict[str, dict[str, object]] = {}
    for q in questions:
        out = qa(question=q.question, context=q.context)
        answers[q.id] = {"answer": out["answer"], "start": out["start"], "end": out["end"], "score": round(out["score"], 6)}
    seconds = time.perf_counter() - started
    scores = score_predictions({k: str(v["answer"]) for k, v in answers.items()}, questions)
    golden = {
        "about": "transformers pipeline('question-answering') with default settings; see scripts/make_reader_golden.py",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "model": Path(args.model).name,
        "squad": Path(args.squad).name,
        "paragraphs_per_article": args.paragraphs_per_article,
        "exact_match": round(scores["exact_match"], 2),
        "f1": round(scores["f1"], 2),
        "questions": len(questions),
        "answers": answers,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(golden, indent=0, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{len(questions)} questions in {seconds:.1f}s: EM {scores['exact_match']:.1f} F1 {scores['f1']:.1f} -> {args.out}")


if __name__ == "__main__":
    main()
