"""Extractive reader: the answer is a span of one retrieved passage, so its citation is exact.

It keeps the windowing and span rules of transformers' `pipeline("question-answering")` (removed in
transformers 5) but runs one batched forward over every window of every passage, and scores spans
so that they compare across windows and passages. Windows are cut by `tokenizers` as transformers'
fast tokenizer cuts them; the model runs on ONNX Runtime (the shipped export, no torch) or torch
(`rag.heads`).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from indexes.errors import InvalidInput, ModelLoadError
from indexes.types import Passage
from rag.answer import NOT_IN_SOURCES, Answer, Citation
from rag.shipped import READER

if TYPE_CHECKING:
    from rag.heads import Head

log = logging.getLogger(__name__)

# The shipped ONNX export (rag/shipped_models/); RAG_READER_MODEL may name any HF QA folder or hub id.
DEFAULT_READER = READER


@dataclass(frozen=True)
class Span:
    """The best answer of one context, offsets in characters of that context.

    `score` is a probability under ONE softmax shared by all windows of all contexts read for the
    question (shared normalisation), summed over the candidate spans (top 12 per window) that read
    as the same text, as the 4.57 pipeline sums them. So scores compare across windows and
    passages of a question, and a context that fits one window gets exactly the pipeline's score;
    a per-window softmax would let a window without the answer hold a span of probability near 1.
    `null_score` is the lowest CLS start x end probability over the context's windows (kept for
    display). Abstention is decided in logit space, per context, as SQuAD 2.0 readers are scored:
    `span_logit` is start + end logit of the chosen span, `null_logit` the lowest CLS start + end
    logit over the context's windows, and `margin = span_logit - null_logit`. Unlike a difference
    of probabilities under the shared softmax, the margin of a passage does not change with how
    many other passages were read. `found` is False when the reader's abstention rule, applied to
    this context alone, rejects the span (see `ExtractiveReader`), or when the context had no room
    for an answer; `text` is then empty, while `proposal`, `start` and `end` keep the best span so
    that `ExtractiveReader.answer` can weigh it against the other passages.
    """

    context: int
    text: str
    start: int
    end: int
    score: float
    null_score: float
    found: bool = True
    window: int = 0
    span_logit: float = float("-inf")
    null_logit: float = float("inf")
    proposal: str = ""  # the best span's text even when abstention rejected it (for calibration)
    # log of this context's own softmax normalisers (start + end, over its windows, CLS included):
    # span_logit - log_norm is the span's log-probability read against this passage alone
    log_norm: float = 0.0

    @property
    def margin(self) -> float:
        """Best span logit minus no-answer logit: > 0 means the reader prefers the span."""
        return self.span_logit - self.null_logit


@dataclass
class _Window:
    item: int  # which question of the batch
    context: int  # which of that question's contexts
    number: int  # 0 for the first window of its context
    encoding: Any  # tokenizers.Encoding of this window
    features: dict[str, list[int]]


Abstention = Literal["null", "span", "off"]

# Chosen together on data that is not the evaluation data, by one rule (the threshold and retrieval
# weight that maximise min(abstention on unanswerable, answered rate on answerable) on the questions of
# the shared dev articles 1-12; `rag eval grounding-replay RECORDS --calibrate-articles 12`, README,
# grounding): the answer's passage has the highest margin + weight x standardised retrieval score,
# and the reader abstains unless that value exceeds the threshold.
DEFAULT_NULL_THRESHOLD = 15.0
DEFAULT_RETRIEVAL_WEIGHT = 3.0
# The same rule for readers without a no-answer head (abstention=span, reader-minilm-l6-squad):
# `rag eval grounding --calibrate-articles 12 --limit 60` with RAG_READER_ABSTENTION=span gives 11.0.
DEFAULT_SPAN_THRESHOLD = 11.0
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r]*\n")

_PRE_TOP_K = 12  # candidates per window before same-text spans are merged (the pipeline's top_k * 2 + 10)
_MASKED = -10000.0  # the pipeline's logit for positions outside the context (CLS stays unmasked)


class ExtractiveReader:
    """Any `AutoModelForQuestionAnswering` as a reader: `answer(question, passages) -> Answer`.

    `model` is the shipped export (default), a folder exported by `rag.onnx_export`, or an HF folder
    or hub id; `runtime` ("auto", "onnx", "torch") picks what runs it (`rag.heads.load_head`).

    Defaults follow the 4.57 pipeline (windows of min(model limit, 384) tokens with a 128-token
    stride, answers of at most 15 tokens, spans widened to whole words), so a question read
    against one short context gets the pipeline's answer.

    Between passages (`answer`): each passage's best span gets a value, its evidence in logits
    plus `retrieval_weight` x the passage's standardised retrieval score (`passage_values`); the
    answer is the span of highest value. Abstention (`abstention`): "null" (readers trained with
    no-answer examples, SQuAD 2.0 style; evidence = margin over the no-answer logit) answers only
    when that value exceeds `null_threshold`; "span" (readers without a no-answer head, whose CLS
    is untrained; evidence = the span's own start + end logit) when it exceeds `span_threshold`;
    "off" chooses as "null" does and always answers. Read alone (`read`), a passage's span is `found` when its own margin
    (or span logit) passes the threshold: the same rule for one passage. Thresholds and weight are
    chosen on data by `rag eval grounding-replay`. `null_threshold=None` is the same as "off"
    (kept for the parity tests of SQuAD 1.1 readers).
    """

    def __init__(
        self,
        model: str = DEFAULT_READER,
        *,
        device: str = "cpu",
        max_answer_tokens: int = 15,
        null_threshold: float | None = None,
        abstention: Abstention = "null",
        span_threshold: float = DEFAULT_SPAN_THRESHOLD,
        batch_tokens: int = 16384,
        max_seq_len: int | None = None,
        doc_stride: int | None = None,
        max_question_tokens: int = 64,
        align_to_words: bool = True,
        retrieval_weight: float = DEFAULT_RETRIEVAL_WEIGHT,
        runtime: str = "auto",
        threads: int | None = None,
    ) -> None:
        if max_answer_tokens < 1:
            raise InvalidInput("max_answer_tokens must be at least 1")
        from rag.heads import load_head

        self.model_name = model
        try:
            self.model: Head = load_head(model, "question-answering", runtime, device=device, threads=threads)
        except ModelLoadError as exc:
            raise ModelLoadError(
                f"cannot load reader model {model!r} ({str(exc)[:300]}). Give a local folder of a question-answering "
                "model (an HF folder, or an ONNX export) with --model or RAG_READER_MODEL, or leave it unset for the "
                f"shipped {DEFAULT_READER}"
            ) from exc
        self.runtime = self.model.runtime
        self.device = device
        self.max_answer_tokens = max_answer_tokens
        self.null_threshold = null_threshold
        self.abstention: Abstention = "off" if null_threshold is None and abstention == "null" else abstention
        self.span_threshold = span_threshold
        self.batch_tokens = batch_tokens
        self.max_seq_len = max_seq_len or min(self.model.max_length, 384)
        self.doc_stride = doc_stride if doc_stride is not None else min(self.max_seq_len // 2, 128)
        self.max_question_tokens = max_question_tokens
        self.align_to_words = align_to_words
        self.retrieval_weight = retrieval_weight
        if self.max_seq_len - max_question_tokens - 3 <= self.doc_stride:
            raise InvalidInput(
                f"windows of {self.max_seq_len} tokens leave no room for a {max_question_tokens}-token question "
                f"and a {self.doc_stride}-token stride"
            )
        self._inputs = self.model.inputs
        # Two tokenizer backends of our own, their settings fixed here (a backend's truncation is its
        # state, and readers are called from many threads): questions alone, and question + context
        # windows cut with stride, as transformers' fast tokenizer cuts them for the 4.57 pipeline.
        self.tokenizer = self.model.tokenizer()
        self._pairs = self.model.tokenizer()
        self._pairs.enable_truncation(self.max_seq_len, stride=self.doc_stride, strategy="only_second", direction="right")

    # -- public ------------------------------------------------------------------------------
    def answer(self, question: str, passages: Sequence[Passage], suspicious: Sequence[int] = ()) -> Answer:
        """The best span over all passages, cited as [n] = its 1-based position (the rank) in `passages`.

        No passage's span passing the abstention rule gives `found=False`, the text "Not in the
        sources." and the passages. A passage numbered in `suspicious` (text that addresses the
        model) is read but never the source of the answer: text that orders an answer cannot vouch for it.
        """
        started = time.perf_counter()
        passages = list(passages)
        spans = self.read(question, [p.text for p in passages]) if passages else []
        timings = {"read_ms": (time.perf_counter() - started) * 1000}
        prior = passage_prior([p.score for p in passages], self.retrieval_weight)
        flagged = set(suspicious)
        values = self.passage_values(spans, [p.score for p in passages])
        best_index = choose_passage(
            values, [bool(s.proposal) and i + 1 not in flagged for i, s in enumerate(spans)], self.threshold
        )
        best = spans[best_index] if best_index is not None else None
        details: dict[str, Any] = {
            "reader": self.model_name,
            "retrieval_weight": self.retrieval_weight,
            "abstention": self.abstention,
            "threshold": self.threshold,
            # every passage's best span and its margin: enough to replay the decision at any threshold
            "candidates": [
                {
                    "n": i + 1,
                    "text": s.proposal,
                    "score": round(float(s.score * prior[i]), 6),
                    "margin": _finite(s.margin),
                    "value": _finite(values[i]),
                    "span_logit": _finite(s.span_logit),
                    "null_logit": _finite(s.null_logit),
                    "log_norm": _finite(s.log_norm),
                    "reader_score": round(float(s.score), 6),
                    "retrieval_score": round(float(p.score), 6),
                    "suspicious": i + 1 in flagged,
                }
                for i, (s, p) in enumerate(zip(spans, passages))
            ],
        }
        if flagged:
            details["suspicious_passages"] = sorted(flagged)
        if spans:
            details["null_score"] = min(s.null_score for s in spans)
        if best is None:
            details["reason"] = (
                "no passages retrieved"
                if not passages
                else "the reader found no answer in the passages"
                + (" (suspicious passages are never the source of an answer)" if flagged else "")
            )
            return Answer(
                answer=NOT_IN_SOURCES, mode="extractive", passages=passages, found=False, timings=timings, details=details
            )
        p = passages[best.context]
        citation = Citation(
            n=best.context + 1,
            doc_id=p.doc_id,
            chunk_id=p.chunk_id,
            source=p.source,
            title=p.title,
            start=p.start + best.start,
            end=p.start + best.end,
            chunk_start=best.start,
            chunk_end=best.end,
            text=best.proposal,
            verified=True,  # the span is a slice of the passage itself, and it passed the abstention rule
            score=best.score,
        )
        details["margin"] = _finite(best.margin)
        details["value"] = _finite(float(values[best_index]))
        return Answer(
            answer=best.proposal,
            mode="extractive",
            citations=[citation],
            passages=passages,
            score=best.score,
            timings=timings,
            details=details,
        )

    @property
    def threshold(self) -> float | None:
        """The logit threshold the abstention rule uses (None when it never abstains)."""
        if self.abstention == "null":
            return self.null_threshold
        if self.abstention == "span":
            return self.span_threshold
        return None

    @property
    def evidence(self) -> Literal["margin", "span_logit"]:
        """Which `Span` number is a passage's evidence (also the candidate field that
        `rag.evaluation.grounding.threshold_curve` replays): the span's own start + end logit for
        readers without a no-answer head (abstention "span"), else the margin over the no-answer
        logit: "off" chooses as "null" does and only never abstains, so turning abstention off
        keeps every answer the default gives."""
        return "span_logit" if self.abstention == "span" else "margin"

    def passage_values(self, spans: Sequence[Span], retrieval_scores: Sequence[float]) -> np.ndarray:
        """Each passage's evidence for its best span (`evidence`), in logits, plus
        `retrieval_weight` x its standardised retrieval score."""
        evidence = [s.span_logit if self.evidence == "span_logit" else s.margin for s in spans]
        return np.asarray(evidence, dtype=np.float64) + self.retrieval_weight * standardised(retrieval_scores)

    def keeps(self, span_logit: float, null_logit: float) -> bool:
        """The abstention rule: is a span with these logits an answer?"""
        if self.abstention == "null" and self.null_threshold is not None:
            return span_logit - null_logit > self.null_threshold
        if self.abstention == "span":
            return span_logit >= self.span_threshold
        return True

    def read(self, question: str, contexts: Sequence[str]) -> list[Span]:
        """The best span of each context for one question, in the order of `contexts`."""
        return self.read_batch([(question, contexts)])[0]

    def read_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[list[Span]]:
        """`read` for many questions at once: every window of every context goes through one batched forward."""
        listed = [(q, list(contexts)) for q, contexts in items]
        windows = self._windows(listed)
        logits = self._forward(windows)
        by_item: list[list[int]] = [[] for _ in listed]
        for w, window in enumerate(windows):
            by_item[window.item].append(w)
        return [
            self._decode(contexts, [windows[w] for w in by_item[i]], [logits[w] for w in by_item[i]])
            for i, (_, contexts) in enumerate(listed)
        ]

    # -- steps -------------------------------------------------------------------------------
    def _clip_question(self, question: str) -> str:
        """Cut a question to `max_question_tokens` so that windows keep room for context."""
        offsets = self.tokenizer.encode(question, add_special_tokens=False).offsets
        if len(offsets) <= self.max_question_tokens:
            return question
        return question[: offsets[self.max_question_tokens - 1][1]]

    def _windows(self, items: Sequence[tuple[str, list[str]]]) -> list[_Window]:
        """Question-first windows with stride over each context, as the pipeline tokenises."""
        pairs = [(i, c) for i, (_, contexts) in enumerate(items) for c in range(len(contexts))]
        if not pairs:
            return []
        questions = [self._clip_question(q) for q, _ in items]
        encodings = self._pairs.encode_batch([(questions[i], items[i][1][c]) for i, c in pairs])
        windows: list[_Window] = []
        for (item, context), first in zip(pairs, encodings):
            # the pipeline's order: the first window, then its overflow (each later stride)
            for number, enc in enumerate([first, *first.overflowing]):
                features = {"input_ids": enc.ids, "attention_mask": enc.attention_mask, "token_type_ids": enc.type_ids}
                windows.append(_Window(item, context, number, enc, {name: features[name] for name in self._inputs}))
        return windows

    def _forward(self, windows: list[_Window]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Start and end logits per window (batched within `batch_tokens` by the runtime)."""
        if not windows:
            return []
        outputs = self.model.run([w.features for w in windows], self.batch_tokens)
        return [(start, end) for start, end in outputs]

    def _decode(
        self, contexts: list[str], windows: list[_Window], logits: list[tuple[np.ndarray, np.ndarray]]
    ) -> list[Span]:
        """Shared softmax over all windows of the question, then the best same-text answer per context.

        The arithmetic (float32, masking, CLS, top-k, merging by lower-cased text) is the 4.57
        pipeline's, so one context in one window gives its answer and score bit for bit.
        """
        masked_starts, masked_ends = [], []
        for window, (start_logits, end_logits) in zip(windows, logits):
            undesired = self._undesired(window)
            masked_starts.append(np.where(undesired, _MASKED, start_logits))
            masked_ends.append(np.where(undesired, _MASKED, end_logits))
        probs_start = _shared_softmax(masked_starts)
        probs_end = _shared_softmax(masked_ends)

        log_norm = [0.0] * len(contexts)
        for c in range(len(contexts)):
            rows = [(ms, me) for window, ms, me in zip(windows, masked_starts, masked_ends) if window.context == c]
            if rows:
                log_norm[c] = _logsumexp([ms for ms, _ in rows]) + _logsumexp([me for _, me in rows])
        answers: list[list[dict[str, Any]]] = [[] for _ in contexts]
        null = [float("inf")] * len(contexts)
        null_logit = [float("inf")] * len(contexts)
        for window, p_start, p_end, masked_start, masked_end in zip(windows, probs_start, probs_end, masked_starts, masked_ends):
            null[window.context] = min(null[window.context], float(p_start[0] * p_end[0]))
            null_logit[window.context] = min(null_logit[window.context], float(masked_start[0] + masked_end[0]))
            p_start[0] = p_end[0] = 0.0
            text_of = contexts[window.context]
            for s, e, score in self._top_spans(window, p_start, p_end):
                start, end = self._chars(window.encoding, s, e)
                # answer hygiene: no span across a paragraph break (a title joined to its body),
                # no surrounding whitespace
                raw = text_of[start:end]
                if _PARAGRAPH_BREAK.search(raw):
                    continue
                start += len(raw) - len(raw.lstrip())
                end -= len(raw) - len(raw.rstrip())
                if end <= start:
                    continue
                text = text_of[start:end]
                logit = float(masked_start[s] + masked_end[e])
                merged = next((a for a in answers[window.context] if a["text"].lower() == text.lower()), None)
                if merged is None:
                    merged = {"text": text, "start": start, "end": end, "window": window.number, "logit": logit, "seen": {}}
                    answers[window.context].append(merged)
                merged["logit"] = max(merged["logit"], logit)
                # Same-text spans add up, as in the pipeline; but the same characters read again
                # in the overlap of two windows are one occurrence, scored by its better window.
                by_window = merged["seen"].setdefault((start, end), {})
                by_window[window.number] = by_window.get(window.number, 0.0) + score
                merged["score"] = sum(max(w.values()) for w in merged["seen"].values())

        spans = []
        for c, found in enumerate(answers):
            if not found:
                spans.append(
                    Span(
                        c, "", 0, 0, 0.0, null[c] if null[c] != float("inf") else 0.0, found=False,
                        null_logit=null_logit[c], log_norm=log_norm[c],
                    )
                )
                continue
            best = sorted(found, key=lambda a: a["score"], reverse=True)[0]
            answerable = bool(best["text"].strip()) and self.keeps(best["logit"], null_logit[c])
            spans.append(
                Span(
                    context=c,
                    text=best["text"] if answerable else "",
                    start=best["start"],  # the proposal's offsets, kept for `answer`'s rule across passages
                    end=best["end"],
                    score=float(best["score"]),
                    null_score=null[c],
                    found=answerable,
                    window=best["window"],
                    span_logit=best["logit"],
                    null_logit=null_logit[c],
                    proposal=best["text"],
                    log_norm=log_norm[c],
                )
            )
        return spans

    def _undesired(self, window: _Window) -> np.ndarray:
        """True where a token cannot start or end an answer: question, specials, padding (CLS excepted)."""
        undesired = np.array([s != 1 for s in window.encoding.sequence_ids])
        cls_id = self.model.cls_id
        if cls_id is not None:
            undesired[np.array(window.features["input_ids"]) == cls_id] = False
        return undesired

    def _top_spans(self, window: _Window, p_start: np.ndarray, p_end: np.ndarray) -> list[tuple[int, int, float]]:
        """The most probable spans of a window with end - start < max_answer_tokens, best first."""
        candidates = np.tril(np.triu(np.outer(p_start, p_end)), self.max_answer_tokens - 1)
        flat = candidates.ravel()
        if flat.size <= _PRE_TOP_K:
            order = np.argsort(-flat)
        else:
            top = np.argpartition(-flat, _PRE_TOP_K)[:_PRE_TOP_K]
            order = top[np.argsort(-flat[top])]
        starts, ends = np.unravel_index(order, candidates.shape)
        allowed = ~self._undesired(window)
        return [
            (int(s), int(e), float(candidates[s, e]))
            for s, e in zip(starts, ends)
            if allowed[s] and allowed[e]
        ]

    def _chars(self, enc: Any, s: int, e: int) -> tuple[int, int]:
        """Token span to character span, widened to whole words as the pipeline does."""
        if self.align_to_words:
            start_word, end_word = enc.token_to_word(s), enc.token_to_word(e)
            if start_word is not None and end_word is not None:
                first = enc.word_to_chars(start_word, 1)
                last = enc.word_to_chars(end_word, 1)
                if first is not None and last is not None:
                    return int(first[0]), int(last[1])
        return int(enc.offsets[s][0]), int(enc.offsets[e][1])


def standardised(scores: Sequence[float]) -> np.ndarray:
    """Retrieval scores as z-scores over the k passages, so one weight fits cosine, BM25 and fused scales."""
    values = np.asarray(scores, dtype=np.float64)
    if len(values) < 2 or values.std() == 0:
        return np.zeros(len(values))
    return (values - values.mean()) / values.std()


def choose_passage(values: Sequence[float] | np.ndarray, allowed: Sequence[bool], threshold: float | None) -> int | None:
    """The answer's passage: the allowed one of highest value (`ExtractiveReader.passage_values`),
    or None when even that value does not exceed `threshold` (None: never abstain).

    One number both ranks the passages and decides abstention: chosen on SQuAD dev articles 1-12
    (README, grounding), margin + w x standardised retrieval score separated answerable from
    unanswerable questions better than the best margin alone and picked the right passage at least
    as often as the shared-softmax span probability x retrieval prior used before.
    """
    finite = [i for i, v in enumerate(values) if allowed[i] and np.isfinite(v)]
    best = max(finite, key=lambda i: values[i], default=None)
    if best is None or (threshold is not None and not values[best] > threshold):
        return None
    return best


def passage_prior(scores: Sequence[float], weight: float) -> np.ndarray:
    """P(passage | question) from retrieval scores, to weigh each passage's best span.

    Open-domain readers do better when the span score is combined with the retriever's
    (BERTserini; the marginal P(a) = sum_p P(p|q) P(a|p,q) of REALM/RAG). Scores are
    standardised over the k passages first, so the same weight works for cosine, BM25 and fused
    scores; weight 0 gives a uniform prior (the reader alone, as the 4.57 pipeline would).
    """
    if weight == 0 or len(scores) < 2:
        return np.full(len(scores), 1.0 / max(len(scores), 1))
    logits = weight * standardised(scores)
    logits -= logits.max()
    prior = np.exp(logits)
    return prior / prior.sum()


def _finite(value: float) -> float | None:
    return round(float(value), 4) if np.isfinite(value) else None


def _logsumexp(rows: list[np.ndarray]) -> float:
    """log sum exp over the concatenation of `rows` (float64)."""
    top = max(float(r.max()) for r in rows)
    return top + float(np.log(sum(np.exp(r.astype(np.float64) - top).sum() for r in rows)))


def _shared_softmax(rows: list[np.ndarray]) -> list[np.ndarray]:
    """One softmax over the concatenation of `rows`, returned split back into rows (float32)."""
    if not rows:
        return []
    top = max(float(r.max()) for r in rows)
    exps = [np.exp(r - np.float32(top)) for r in rows]
    total = np.float32(sum(np.float32(x.sum()) for x in exps)) if len(exps) > 1 else exps[0].sum()
    return [x / total for x in exps]
