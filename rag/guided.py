"""Reader-guided generation: the extractive reader's confident spans go into the prompt, and when
the generator's sentences all fail the check, a sentence built from the reader's span stands in.

Small generators rarely state the answer the way a check can verify it (README, grounding: SmolLM2
states a gold answer in 28 of 150 answerable questions). The reader finds the answer span far more
often; it is given to the generator with its passage number, so the model has to state it and cite
it. The judge checks support, not relevance: a true sentence copied from a passage that does not
answer the question is "supported" (measured: on held-out unanswerable questions SmolLM2 copied such
sentences and the judge verified them). So a guided answer stands only when the reader answers
(passes its abstention rule) and the judge verifies "question + span" on the span's passage, and
then only if a kept sentence states the reader's span; else the answer is the passage sentence
holding the span, cited and marked `fallback="reader_span"`. A question the reader abstains on, or
whose span the judge rejects, is refused ("Not in the sources."): two gates, as the docs measure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from indexes.types import Passage
from rag.answer import NOT_IN_SOURCES, Answer
from rag.citations import _citation
from rag.verifiers.base import Evidence, Verifier
from rag.verifiers.text import normalize_answer, sentence_spans

READER_SPAN = "reader_span"
MAX_HINTS = 3


def reader_hints(guide: Answer | None) -> list[tuple[int, str]]:
    """(passage number, span) for the reader's confident candidates, best first, distinct texts:
    the one it answers with, then others passing its threshold. None when it abstains."""
    if guide is None or not guide.found or not guide.citations:
        return []
    best = guide.citations[0]
    hints = [(best.n, guide.answer)]
    threshold = guide.details.get("threshold")
    seen = {normalize_answer(guide.answer)}
    candidates = sorted(guide.details.get("candidates", []), key=lambda c: -(c.get("value") or float("-inf")))
    for c in candidates:
        value, text = c.get("value"), c.get("text") or ""
        key = normalize_answer(text)
        if len(hints) >= MAX_HINTS or not key or key in seen or c.get("suspicious"):
            continue
        if threshold is not None and (value is None or value <= threshold):
            continue
        seen.add(key)
        hints.append((int(c["n"]), text))
    return hints


def _sentence_around(text: str, start: int, end: int) -> tuple[int, int]:
    for s, e in sentence_spans(text):
        if s <= start and end <= e:
            return s, e
    return start, end


def _refused(checked: Answer, passages: Sequence[Passage], reason: str) -> Answer:
    details = {**checked.details, "reason": reason}
    return replace(checked, answer=NOT_IN_SOURCES, citations=[], passages=list(passages), score=0.0, found=False, details=details, fallback=None)


def span_claim(question: str, span: str) -> str:
    """The claim the gate asks the verifier to check: the reader's span read with its question."""
    return f"{question.strip()} {span.strip()}."


@dataclass(frozen=True)
class SpanGate:
    """The reader's span through its two gates: `reason` says why a guided answer is refused (then
    nothing needs generating: no draft can pass), else `evidence` is the judge's verdict on
    "question + span" in the span's passage."""

    evidence: Evidence | None
    reason: str | None = None


def span_gate(question: str, guide: Answer, passages: Sequence[Passage], verifier: Verifier) -> SpanGate:
    """Whether the reader answers and the judge verifies its span, decided before generation."""
    if not guide.found or not guide.citations:
        return SpanGate(None, "the reader found no answer in the passages")
    n = guide.citations[0].n
    if not 0 < n <= len(passages):
        return SpanGate(None, "the reader's passage is not among the passages")
    # No second chance for a span the judge rejects: the lexical check as one added 0 of 150
    # held-out answerable questions with the trained judge (7 with the first one), docs/judge.md.
    # only the span's passage is asked: the verdict is per passage, and the four others cost the
    # judge 4/5 of its time before the first token (318 -> 71 ms on 2 cores, docs/ship.md)
    [[evidence]] = verifier.verify(question, [span_claim(question, guide.answer)], [passages[n - 1]])
    evidence = replace(evidence, n=n)
    if not evidence.supported:
        return SpanGate(evidence, "the support judge does not verify the reader's answer in its passage")
    return SpanGate(evidence)


def guided_answer(
    question: str, guide: Answer | None, passages: Sequence[Passage], verifier: Verifier, checked: Answer, gate: SpanGate | None = None
) -> Answer:
    """The answer of reader-guided generation, from the generator's checked answer `checked` and
    the reader's answer `guide` (None: unguided, `checked` stands); `gate`: `span_gate`'s verdict
    when it was already asked."""
    if guide is None:
        return checked
    gate = gate or span_gate(question, guide, passages, verifier)
    if gate.reason is not None or gate.evidence is None:
        return _refused(checked, passages, gate.reason or "the reader's span was not checked")
    span = f" {normalize_answer(guide.answer)} "
    states = [s for s in checked.details.get("sentences", []) if s.get("supported") and span in f" {normalize_answer(s['text'])} "]
    if checked.found and states and any(c.verified for c in checked.citations):
        return checked
    return span_fallback(guide, passages, gate.evidence, checked)


def span_fallback(guide: Answer, passages: Sequence[Passage], evidence: Evidence, checked: Answer) -> Answer:
    """The passage sentence holding the reader's span (verified by `evidence`), cited, in place of
    the generator's sentences, which stay in `details` (generated, unsupported_sentences)."""
    cited = guide.citations[0]
    n = cited.n
    passage = passages[n - 1]
    start, end = _sentence_around(passage.text, cited.chunk_start, cited.chunk_end)
    sentence = " ".join(passage.text[start:end].split()).rstrip()
    body = sentence[:-1] if sentence.endswith(".") else sentence
    text = f"{body} [{n}]."
    citation = _citation(passage, n, Evidence(n, start, end, evidence.score, True), True)
    details = {k: v for k, v in checked.details.items() if k != "reason"}
    details.update({"fallback": READER_SPAN, "reader_span": guide.answer, "reader_margin": guide.details.get("margin")})
    return replace(
        checked, answer=text, citations=[citation], passages=list(passages), score=round(evidence.score, 4), found=True,
        details=details, fallback=READER_SPAN,
    )
