"""The lexical verifier: no model, deterministic, a filter for fabrication rather than a proof.

    claim(s)   = content words of the sentence; a short answer ("Warsaw.") is read with the
                 question's words at half weight
    novel(s)   = content words of the sentence not in the question: what it asserts
    support(s, w) = min(recall(novel, w), recall(claim, w))   over the sentences w of a passage,

and 0 when the sentence asserts nothing new (the question restated), a name is missing
(`missing_names`) or the guards of `conflicts` fire (negation, numbers, qualifiers, name order).
Recall is ROUGE-1 turned around: what fraction of the claim can be read in the source. A name the
question gives counts as present in any sentence of a passage that names it (the sentence may say
"she"). Evidence is one sentence: pairs would let a claim take its subject from one sentence and
its predicate from the next. The threshold 0.7 (`RAG_SUPPORT_THRESHOLD`) tolerates one missing
common word in four. Known misses: paraphrases and claims spanning two source sentences.
"""

from __future__ import annotations

from collections.abc import Sequence

from indexes.types import Passage
from rag.verifiers.base import Claim, Evidence, Source, answers_elsewhere, conflicts, missing_names
from rag.verifiers.text import content_words, name_words

DEFAULT_THRESHOLD = 0.7


def _recall(words: set[str], evidence: set[str]) -> float:
    return len(words & evidence) / len(words) if words else 0.0


class LexicalVerifier:
    name = "lexical"

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, note: str = "") -> None:
        self.threshold = threshold
        self.note = note

    def verify(self, question: str, claims: Sequence[str], passages: Sequence[Passage]) -> list[list[Evidence]]:
        sources = [Source.of(p) for p in passages]
        return [[self.evidence(Claim(c, question), s, n) for n, s in enumerate(sources, start=1)] for c in claims]

    def score(self, claim: Claim, source: Source, window: int) -> float:
        sentence = claim.words
        if not sentence:
            return 0.0
        question = content_words(claim.question)
        novel = sentence - question
        if not novel:
            return 0.0  # the question restated asserts nothing
        if missing_names(claim, source, window):
            return 0.0
        if conflicts(claim.text, source.window_text(window), claim.question):
            return 0.0
        if answers_elsewhere(claim, source, window):
            return 0.0  # costs "grew" for "grow" (w-short-right-2): irregular verbs do not stem alike
        # the same for a full sentence that repeats what the question asks ("Marie Curie was born in
        # Paris" against "She moved to Paris in 1891"): the words it repeats must be in the evidence,
        # or the question's names (read anywhere in the passage) and the answer make up the recall
        repeated = (question - name_words(claim.question)) & sentence
        if repeated and not repeated & source.words[window]:
            return 0.0
        # names the question gives, found elsewhere in the passage, count as read here
        evidence = source.words[window] | (name_words(claim.question) & source.all_words)
        asked = question - sentence if claim.short else set()
        recall = (len(sentence & evidence) + 0.5 * len(asked & evidence)) / (len(sentence) + 0.5 * len(asked))
        return min(_recall(novel, evidence), recall)

    def evidence(self, claim: Claim, source: Source, n: int) -> Evidence:
        best = Evidence(n, 0, 0, 0.0)
        for i, (start, end) in enumerate(source.windows):
            score = self.score(claim, source, i)
            # prefer the shorter window at equal support: it is the sentence that says it
            if score > best.score + 1e-9 or (abs(score - best.score) <= 1e-9 and best.end - best.start > end - start > 0):
                best = Evidence(n, start, end, score)
        return Evidence(n, best.start, best.end, best.score, best.score >= self.threshold)
