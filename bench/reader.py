"""Extractive reading speed and quality: rag's reader vs. the loop a user would write.

Each question reads k=5 passages: its own SQuAD dev paragraph and 4 other paragraphs of the same
article (shuffled). Baseline: the 4.57 `pipeline("question-answering")` pre/post-processing
re-implemented naively, the model called once per window of each passage (no batching), one
softmax per window, the answer with the highest per-passage pipeline score. Ours:
`ExtractiveReader.answer` (one batched forward over all windows, one softmax shared by them).
Same model, questions and threads; the two run alternately in blocks so machine load hits both.

    python bench/reader.py [--questions 100] [--model PATH] [--k 5]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO))

from indexes.types import Passage  # noqa: E402
from rag.evaluation.squad import SquadQuestion, read_squad, score_predictions  # noqa: E402
from rag.reader import ExtractiveReader  # noqa: E402


def build_cases(squad: Path, n: int, k: int, seed: int) -> list[tuple[SquadQuestion, list[str]]]:
    """n questions sampled over the file, each with its paragraph among k-1 others of its article."""
    questions = read_squad(squad)
    by_article: dict[int, list[str]] = {}
    for q in questions:
        paragraphs = by_article.setdefault(q.article, [])
        if not paragraphs or paragraphs[-1] != q.context:
            paragraphs.append(q.context)
    rng = random.Random(seed)
    cases = []
    for q in rng.sample(questions, n):
        others = [p for p in by_article[q.article] if p != q.context]
        contexts = rng.sample(others, min(k - 1, len(others))) + [q.context]
        rng.shuffle(contexts)
        cases.append((q, contexts))
    return cases


class NaivePipeline:
    """What `pipeline("question-answering")` did, called once per passage: the usual user loop."""

    def __init__(self, reader: ExtractiveReader) -> None:
        self.tokenizer, self.model, self.torch = reader.tokenizer, reader.model, reader._torch
        self.max_len, self.stride, self.max_answer = reader.max_seq_len, reader.doc_stride, reader.max_answer_tokens

    def one_passage(self, question: str, context: str) -> tuple[str, float]:
        enc = self.tokenizer(
            question, context, truncation="only_second", max_length=self.max_len, stride=self.stride,
            return_overflowing_tokens=True, return_offsets_mapping=True,
        )
        answers: list[dict[str, Any]] = []
        for w in range(len(enc["input_ids"])):
            inputs = {n: self.torch.tensor([enc[n][w]]) for n in self.tokenizer.model_input_names if n in enc}
            with self.torch.inference_mode():
                out = self.model(**inputs)
            undesired = np.array([s != 1 for s in enc.sequence_ids(w)])
            undesired[0] = False  # CLS stays in the softmax
            probs = []
            for logits in (out.start_logits[0].numpy(), out.end_logits[0].numpy()):
                x = np.where(undesired, -10000.0, logits)
                x = np.exp(x - x.max())
                probs.append(x / x.sum())  # one softmax per window
            p_start, p_end = probs
            p_start[0] = p_end[0] = 0.0
            candidates = np.tril(np.triu(np.outer(p_start, p_end)), self.max_answer - 1)
            flat = candidates.ravel()
            top = np.argpartition(-flat, 12)[:12]
            for f in top[np.argsort(-flat[top])]:
                s, e = divmod(int(f), candidates.shape[1])
                if undesired[s] or undesired[e] or s == 0:
                    continue
                encoding = enc.encodings[w]
                start = encoding.word_to_chars(encoding.token_to_word(s), 1)[0]
                end = encoding.word_to_chars(encoding.token_to_word(e), 1)[1]
                text = context[start:end]
                same = next((a for a in answers if a["text"].lower() == text.lower()), None)
                if same:
                    same["score"] += float(flat[f])
                else:
                    answers.append({"text": text, "score": float(flat[f])})
        best = max(answers, key=lambda a: a["score"], default={"text": "", "score": 0.0})
        return best["text"], best["score"]

    def answer(self, question: str, contexts: list[str]) -> str:
        results = [self.one_passage(question, c) for c in contexts]
        return max(results, key=lambda r: r[1])[0]


def _passages(contexts: list[str]) -> list[Passage]:
    return [
        Passage(chunk_id=i, doc_id=i, text=c, start=0, end=len(c), ordinal=0, source="squad", title="",
                external_id=None, score=0.0, rank=i + 1)
        for i, c in enumerate(contexts)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=100)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--model", default=str(SHARED / "models" / "reader-minilm-l6-squad"))
    parser.add_argument("--squad", default=str(SHARED / "data" / "squad" / "squad-v1.1-dev-articles-01-24.json"))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--block", type=int, default=10, help="questions per alternating block")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from indexes.encoder import set_threads

    set_threads(args.threads)
    reader = ExtractiveReader(args.model)
    naive = NaivePipeline(reader)
    cases = build_cases(Path(args.squad), args.questions, args.k, args.seed)
    reader.answer(cases[0][0].question, _passages(cases[0][1]))  # warm-up, both share the model
    naive.answer(cases[0][0].question, cases[0][1][:1])

    predictions: dict[str, dict[str, str]] = {"baseline": {}, "ours": {}}
    seconds = {"baseline": 0.0, "ours": 0.0}
    for b in range(0, len(cases), args.block):
        block = cases[b : b + args.block]
        started = time.perf_counter()
        for q, contexts in block:
            predictions["baseline"][q.id] = naive.answer(q.question, contexts)
        seconds["baseline"] += time.perf_counter() - started
        started = time.perf_counter()
        for q, contexts in block:
            predictions["ours"][q.id] = reader.answer(q.question, _passages(contexts)).answer
        seconds["ours"] += time.perf_counter() - started

    questions = [q for q, _ in cases]
    windows = sum(len(w) for w in [reader._windows([(q.question, c)]) for q, c in cases])
    print(f"{len(cases)} questions x {args.k} passages ({windows} windows), model {Path(args.model).name}")
    print(f"{'variant':<10} {'questions/s':>12} {'EM':>6} {'F1':>6}")
    rates = {}
    for name in ("baseline", "ours"):
        scores = score_predictions(predictions[name], questions)
        rates[name] = len(cases) / seconds[name]
        print(f"{name:<10} {rates[name]:>12.2f} {scores['exact_match']:>6.1f} {scores['f1']:>6.1f}")
    agree = sum(predictions["ours"][q.id] == predictions["baseline"][q.id] for q in questions)
    print(f"speed-up ours/baseline: {rates['ours'] / rates['baseline']:.2f}x; same answer on {agree}/{len(cases)} questions")


if __name__ == "__main__":
    main()
