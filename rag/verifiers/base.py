"""The verifier contract: does passage n support this claim, asked this question?

A verifier scores every claim of an answer against every passage at once (so model-based ones
batch), and says for each pair whether the passage supports the claim, with the sentence window
that does (for the citation's offsets). Implementations are chosen by `Settings.verifier`:
`lexical` (no model), `reader` (the extractive reader), `nli` (a cross-encoder), or `auto`.

The guards here are shared by all of them, because each model has blind spots that a rule sees:
a claim and its evidence must agree on negation, on numbers and the words that qualify them
("before 1903" is not "in 1903"), and on who did what to whom (names in the same order, unless one
side is passive); a name the question does not give must be in the evidence sentence.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from indexes.types import Passage
from rag.verifiers.text import (
    NEGATIONS,
    RELATIONS,
    STOP_WORDS,
    content_words,
    is_instruction,
    name_words,
    raw_words,
    sentence_spans,
    strip_citations,
    tagged_stems,
)

FRAGMENT_WORDS = 3
# a sentence that ends: a full stop (closing quotes or brackets may follow) or a citation marker
_COMPLETE = re.compile(r"([.!?][\"'”’)]*|\])\s*$")


@dataclass(frozen=True)
class Evidence:
    """The best window of passage `n` (1-based) for one claim: chunk offsets, a score in [0, 1],
    and the verifier's verdict."""

    n: int
    start: int
    end: int
    score: float
    supported: bool = False


@dataclass(frozen=True)
class Claim:
    """One sentence of an answer, citation markers removed, with the question it answers."""

    text: str
    question: str

    @property
    def words(self) -> set[str]:
        return content_words(self.text)

    @property
    def short(self) -> bool:
        """"Warsaw." is read together with its question; a full sentence stands alone."""
        return len(self.words) < FRAGMENT_WORDS

    def as_statement(self) -> str:
        """What the judge reads: a short answer after its question, ended by a full stop whether
        or not the answer had one ("... in 2021? Emma Raducanu." - the judge was trained so; without
        the stop the same claim scored 0.74 instead of 0.99)."""
        return f"{self.question.strip()} {self.text.strip().rstrip('.').rstrip()}." if self.short else self.text


class Verifier(Protocol):
    """`verify(question, claims, passages)[i][n - 1]`: passage n's evidence for claim i.

    `name` says which check ran (an answer's `details.verifier`); `note` why it was chosen when
    the settings left the choice to `auto` ("" otherwise)."""

    name: str
    note: str

    def verify(self, question: str, claims: Sequence[str], passages: Sequence[Passage]) -> list[list[Evidence]]: ...


@dataclass
class Source:
    """A passage cut into sentence windows; sentences that address the model are never evidence."""

    passage: Passage
    windows: list[tuple[int, int]] = field(default_factory=list)
    words: list[set[str]] = field(default_factory=list)
    all_words: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, passage: Passage) -> Source:
        spans = [(s, e) for s, e in sentence_spans(passage.text) if not is_instruction(passage.text[s:e])]
        words = [content_words(passage.text[s:e]) for s, e in spans]
        every = content_words(passage.title) | set().union(*words) if words else content_words(passage.title)
        return cls(passage, spans, words, every)

    def clean_text(self) -> str:
        """The passage without its instruction-like sentences."""
        return " ".join(self.passage.text[s:e] for s, e in self.windows)

    def window_text(self, i: int) -> str:
        s, e = self.windows[i]
        return self.passage.text[s:e]


def _negated(text: str) -> bool:
    return any(w in NEGATIONS for w in raw_words(text))


def conflict_kinds(claim: str, evidence: str, question: str = "") -> list[str]:
    """Every reason why `evidence` cannot support `claim` whatever the words in common ([] if none),
    so that each guard's effect can be measured on its own (`rag eval verifiers --set`).

    Negation must agree; every number and qualifying relation word next to it must be there;
    names shared by both must come in the same order unless one side is passive ("by").
    """
    found = []
    claim_words, evidence_words = raw_words(claim), raw_words(evidence)
    if _negated(claim) != _negated(evidence):
        found.append("negation")
    claim_numbers = {w for w in name_words(claim) if w.isdigit()}
    evidence_numbers = {w for w in name_words(evidence) if w.isdigit()} | {w for w in name_words(question) if w.isdigit()}
    if not claim_numbers <= evidence_numbers:
        found.append("number")
    relations = {w for w in claim_words if w in RELATIONS} - set(raw_words(question))
    if not relations <= set(evidence_words):
        found.append("qualifier")
    claim_sides, evidence_sides = _sides(claim), _sides(evidence)
    if ("by" in claim_words) == ("by" in evidence_words):
        (c_subject, c_object), (e_subject, e_object) = claim_sides, evidence_sides
        if (c_subject & e_object) and (c_object & e_subject):
            found.append("name order")
    return found


def conflicts(claim: str, evidence: str, question: str = "") -> str | None:
    """The first reason of `conflict_kinds`, or None."""
    found = conflict_kinds(claim, evidence, question)
    return found[0] if found else None


def _sides(text: str) -> tuple[set[str], set[str]]:
    """Names before and after the first lower-case content word that follows a name (the verb,
    roughly): "Pierre Curie taught Marie Curie" -> ({pierre}, {marie}). Names that occur twice
    (a family name shared by two people) are no cue."""
    seq = tagged_stems(text)
    names = [stem for stem, is_name in seq if is_name]
    single = {n for n in names if names.count(n) == 1}
    subject: set[str] = set()
    obj: set[str] = set()
    split = False
    for stem, is_name in seq:
        if not is_name and subject:
            split = True
        elif is_name and stem in single:
            (obj if split else subject).add(stem)
    return subject, obj


def missing_names(claim: Claim, source: Source, window: int) -> set[str]:
    """Names of the claim that the evidence lacks. A name the question gives may be found anywhere
    in the passage or its title (the sentence may say "she"); any other name must be in the window."""
    names = name_words(claim.text)
    asked = name_words(claim.question)
    if claim.short:
        names |= asked
    here = source.words[window]
    missing = {n for n in names if n not in here}
    # "She was born in Warsaw" may stand for the Marie Curie the question and the passage name;
    # "Marie Curie was born in Warsaw" may not stand for Pierre: a window naming someone else
    # than the claim does is about that one (a year or a number is not someone else: "He was born
    # in Paris in 1950" is still about the person the question names)
    others = {w for w in name_words(source.window_text(window)) if not w[:1].isdigit()} - names - asked
    if others:
        return missing
    return {n for n in missing if not (n in asked and n in source.all_words)}


def answers_elsewhere(claim: Claim, source: Source, window: int) -> bool:
    """A short answer ("Paris.") whose evidence sentence shares no word of what the question asks
    besides its names ("Where was Marie Curie born?" against "She moved to Paris in 1891"): the
    passage names the answer, but not as the answer to this question."""
    predicate = content_words(claim.question) - name_words(claim.question)
    return claim.short and bool(predicate) and not predicate & source.words[window]


def is_fragment(text: str, last: bool) -> bool:
    """A piece that cannot be a claim: it ends on a function word ("... the Nobel Prize in"), or it
    is the last sentence and stops without a full stop or a citation (cut by the token limit)."""
    words = raw_words(strip_citations(text))
    if not words:
        return True

    if words[-1] in STOP_WORDS and words[-1] not in NEGATIONS:
        return True
    return last and not _COMPLETE.search(text)
