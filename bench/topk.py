"""Top-k retrieval accuracy for open-domain QA over SQuAD paragraphs, per retriever.

A question counts as answerable at k when one of its top-k passages contains a gold answer
(SQuAD-normalised). Retrieval only, so every question of the file can be scored quickly.

    RAG_HOME=... python bench/topk.py --squad FILE --collection NAME [--k 1,5,20] [--limit N]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from rag.evaluation.qa import contains_answer, spread
    from rag.evaluation.squad import read_squad
    from rag.runtime import Runtime
    from rag.settings import Settings

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--squad", required=True)
    parser.add_argument("--collection", required=True, help="a collection holding the file's paragraphs (rag ingest FILE)")
    parser.add_argument("--k", default="1,5,20")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--retrievers", default="dense,bm25,hybrid")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    ks = [int(k) for k in args.k.split(",")]
    questions = spread(read_squad(args.squad), args.limit)
    runtime = Runtime(Settings())
    print(f"{len(questions)} questions; " + ", ".join(f"top-{k}" for k in ks))
    for kind in args.retrievers.split(","):
        retriever = runtime.retriever(args.collection, kind)
        hits = {k: 0 for k in ks}
        for question in questions:
            passages = retriever.retrieve(question.question, max(ks))
            for k in ks:
                hits[k] += any(contains_answer(p.text, question.answers) for p in passages[:k])
        print(f"{kind:>7}: " + "  ".join(f"top-{k} {hits[k] / len(questions):.3f}" for k in ks), flush=True)


if __name__ == "__main__":
    main()
