"""The reader verifier: asked the user's question, does the cited passage give a span that the
sentence states?

The extractive reader (with its abstention rule) reads every passage once per answer; a sentence
is supported by passage n when n's span passed abstention, lies in a sentence of n that is not an
instruction, appears in the claim as whole words, and the shared guards agree (names, negation,
numbers, name order), and the sentence's own words are read in that sentence of n as the lexical
verifier reads them (its support score at its threshold). The reader alone checks only the answer
to the question: "The Romanesque architecture is characterized by the use of stone and wood" would
pass on a passage whose answer span is "Romanesque"; the lexical score makes the rest of the
sentence count too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from indexes.types import Passage
from rag.verifiers.base import Claim, Evidence, Source, conflicts, missing_names
from rag.verifiers.lexical import DEFAULT_THRESHOLD, LexicalVerifier
from rag.verifiers.text import content_words, normalize_answer


class ReaderVerifier:
    name = "reader"

    def __init__(self, reader: Any, note: str = "", threshold: float = DEFAULT_THRESHOLD) -> None:
        self.reader = reader  # rag.reader.ExtractiveReader (read(question, texts) -> spans)
        self.note = note
        self.words = LexicalVerifier(threshold)  # the rest of the sentence must be read in the evidence

    def verify(self, question: str, claims: Sequence[str], passages: Sequence[Passage]) -> list[list[Evidence]]:
        sources = [Source.of(p) for p in passages]
        spans = self.reader.read(question, [p.text for p in passages]) if passages else []
        out = []
        for text in claims:
            claim = Claim(text, question)
            said = f" {normalize_answer(text)} "
            novel = claim.words - content_words(question)
            row = []
            for n, (source, span) in enumerate(zip(sources, spans), start=1):
                window = next((i for i, (s, e) in enumerate(source.windows) if s <= span.start and span.end <= e), None)
                score = 1.0 / (1.0 + math.exp(-max(min(span.margin, 50.0), -50.0))) if math.isfinite(span.margin) else 0.0
                if not span.found or window is None or not novel:
                    row.append(Evidence(n, 0, 0, score if span.found else 0.0))
                    continue
                answer = normalize_answer(span.text)
                ok = (
                    bool(answer)
                    and f" {answer} " in said
                    and not missing_names(claim, source, window)
                    and conflicts(claim.text, source.window_text(window), question) is None
                    and self.words.score(claim, source, window) >= self.words.threshold
                )
                start, end = source.windows[window]
                row.append(Evidence(n, start, end, score, ok))
            out.append(row)
        return out
