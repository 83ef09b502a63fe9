"""Checks what a generator wrote against the passages it was given.

Citations `[n]` (also `[1, 2]`, `[1][2]`) are parsed; numbers with no passage are removed and
reported. Each sentence is scored against every passage with a lexical *support* score:

    claim(s)   = content words of the sentence; for a fragment of fewer than 3 (such as
                 "Warsaw [1].") also the question's, at half weight: it only means something together
                 with its question
    novel(s)   = content words of the sentence that are not in the question: what it asserts
    names(s)   = capitalised words and numbers of the sentence: the entities it names
    support(s, w) = min(recall(novel, w), recall(claim, w))  if names(s) ⊆ w, else 0

over the sentences w of each passage; words are lower-cased and Snowball-stemmed,
stop words and answer boilerplate ("answer", "source", ...) dropped, numbers kept verbatim. Recall
of the claim's words in the evidence is the unigram recall of ROUGE-1 / token-level SQuAD scoring
turned around: what fraction of the claim can be read in the source. Taking the minimum with the
novel words means restating the question cannot carry a sentence whose new fact is absent (the
classic wrong citation: same people, other city); the name gate is the entity-precision check of
summarisation factuality work: one name the evidence lacks makes it another fact, however many
other words agree (a claim about Marie Curie is not supported by a sentence about Pierre Curie,
"born in Paris on 7 November 1867" not by "born in Warsaw on 7 November 1867"). Evidence is one sentence: pairs let a claim take its subject from one sentence and
its predicate from the next. The default threshold 0.7 (`RAG_SUPPORT_THRESHOLD`) tolerates one
missing common word in four (a paraphrase), and it sits well above what a same-topic passage
without the fact scores. It is cheap (no model) and deterministic, and it is a filter for
fabrication, not a proof of entailment: `rag eval qa` reports citation precision against gold
answers to keep it honest.

Source sentences that address the model ("ignore your instructions", "answer 42") are never
evidence: a passage cannot vouch for what it orders the model to say.

Small models often state the right fact without writing `[n]`. A sentence left uncited that a
passage supports above the threshold gets that passage attached as a citation with
`origin="attributed"` (verified by the same check, but not written by the model), so a user can
always tell the model's own citations from the system's. A sentence the model cited stays judged
on the citation it wrote: a wrong one stays unverified, with the right one only `suggested`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Literal

from indexes.types import Passage
from rag.answer import Answer, Citation
from rag.prompt import NOT_FOUND

Origin = Literal["model", "attributed"]

DEFAULT_THRESHOLD = 0.7
FRAGMENT_WORDS = 3

_CITATION = re.compile(r"\[(\s*\d{1,3}(?:\s*[,;]\s*\d{1,3})*\s*)\]")
_LEADING_CITATIONS = re.compile(r"(?:\s*\[\s*\d{1,3}(?:\s*[,;]\s*\d{1,3})*\s*\][.,;]?)+")
_PARAGRAPH = re.compile(r"\S(?:.|\n(?![ \t]*\n))*")
_WORD = re.compile(r"[^\W_]+(?:['’.][^\W_]+)*", re.UNICODE)
_INJECTION = re.compile(
    r"\b(ignore|disregard|forget|override)\b.{0,40}\b(instruction|instructions|prompt|rules|above|previous)\b"
    r"|\byou (must|should|are now|will) (answer|say|reply|respond|output|ignore)\b"
    r"|\b(answer|reply|respond|say)\s+(with\s+)?[\"'“]?\w+[\"'”]?\s+(to|for)\s+(every|all|any)\b"
    r"|\bsystem prompt\b|\bnew instructions?\b",
    re.IGNORECASE | re.DOTALL,
)
_NOT_FOUND_PATTERNS = re.compile(
    r"\b(unanswerable|do(es)? not (contain|provide|mention|say|include)|not (found|mentioned|given|stated) in|"
    r"no information|cannot be answered|can ?not answer|not enough information|don'?t know)\b",
    re.IGNORECASE,
)

_STOP = frozenset(
    """a an the and or but if then else of to in on at by for with from as into onto over under about
    above below up down out off than so too very can could would should will shall may might must do
    does did done doing be is are was were been being am have has had having i me my we our you your
    he him his she her it its they them their this that these those there here who whom whose which
    what when where why how not no nor only own same such just also any all both each few more most
    other some s t don o re ve ll d m yes again further once during before after while because until
    against between through via per et al ie eg one""".split()
)
# Words a generator uses to talk about answering rather than to state a fact.
_BOILERPLATE = frozenset(
    """answer answers answered source sources passage passages context text document documents
    according mention mentions mentioned state states stated say says said provide provides provided
    given question information based""".split()
)


@lru_cache(maxsize=1)
def _stemmer() -> Any:
    import Stemmer  # PyStemmer (Snowball), a dependency of the keyword index

    return Stemmer.Stemmer("english")


def content_words(text: str) -> set[str]:
    """Stemmed, lower-cased content words; numbers kept as written (without separators)."""
    words = []
    for raw in _WORD.findall(text):
        word = raw.lower().replace("’", "'").rstrip(".")
        if word.endswith("'s"):
            word = word[:-2]
        if not word or word in _STOP or word in _BOILERPLATE:
            continue
        if word.replace(".", "").isdigit():
            words.append(word.replace(".", ""))
        elif len(word) > 1 or word.isdigit():
            words.append(word)
    return set(_stemmer().stemWords([w for w in words if not w.isdigit()])) | {w for w in words if w.isdigit()}


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Sentence offsets from blingfire; a piece that is only citations joins the sentence before it."""
    import blingfire

    if not text.strip():
        return []
    offsets: list[tuple[int, int]] = []
    # a blank line always ends a sentence (a heading, a list, a pasted source block); blingfire
    # alone would run "# Marie Curie\n\nMarie Curie was born ..." into one
    for paragraph in _PARAGRAPH.finditer(text):
        _, found = blingfire.text_to_sentences_and_offsets(paragraph.group())
        offsets.extend((paragraph.start() + s, paragraph.start() + e) for s, e in found)
    spans: list[tuple[int, int]] = []
    for start, end in offsets:
        if spans:
            # "... Warsaw. [1] She ..." : leading markers belong to the sentence before
            lead = _LEADING_CITATIONS.match(text, start, end)
            if lead and lead.end() > start:
                spans[-1] = (spans[-1][0], lead.end())
                start = lead.end()
                while start < end and text[start].isspace():
                    start += 1
        body = _CITATION.sub("", text[start:end]).strip(" \t\n.,;:")
        if spans and not body:
            spans[-1] = (spans[-1][0], end)
        elif body:
            spans.append((start, end))
    return spans


@dataclass(frozen=True)
class Marker:
    """One `[...]` in the answer: where it is and which numbers it names."""

    start: int
    end: int
    numbers: tuple[int, ...]


def parse_citations(text: str) -> list[Marker]:
    found = []
    for match in _CITATION.finditer(text):
        numbers = tuple(int(n) for n in re.split(r"[,;]", match.group(1)) if n.strip())
        found.append(Marker(match.start(), match.end(), numbers))
    return found


def strip_invalid(text: str, k: int) -> tuple[str, list[int]]:
    """Remove citation numbers outside 1..k (a marker left empty goes entirely); returns the
    cleaned text and the removed numbers in order of appearance."""
    removed: list[int] = []
    pieces: list[str] = []
    last = 0
    for marker in parse_citations(text):
        valid = [n for n in marker.numbers if 1 <= n <= k]
        removed.extend(n for n in marker.numbers if not 1 <= n <= k)
        pieces.append(text[last : marker.start])
        if valid:
            pieces.append("".join(f"[{n}]" for n in dict.fromkeys(valid)))
        last = marker.end
    pieces.append(text[last:])
    cleaned = re.sub(r"[ \t]+([.,;:!?])", r"\1", "".join(pieces))
    return re.sub(r"[ \t]{2,}", " ", cleaned).strip(), removed


@dataclass(frozen=True)
class Evidence:
    """The best window of a passage for one sentence: chunk offsets and its support score."""

    n: int
    start: int
    end: int
    score: float


@dataclass(frozen=True)
class SentenceCheck:
    text: str
    start: int
    end: int
    cited: tuple[int, ...]
    support: float
    supported: bool
    verified: tuple[int, ...]
    unverified: tuple[int, ...]
    best: int | None
    suggested: int | None
    attributed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "start": self.start,
            "end": self.end,
            "cited": list(self.cited),
            "support": round(self.support, 4),
            "supported": self.supported,
            "verified": list(self.verified),
            "unverified": list(self.unverified),
            "best_source": self.best,
            "suggested": self.suggested,
            "attributed": self.attributed,
        }


@dataclass
class _Source:
    """A passage cut into sentence windows, with the content words of each."""

    passage: Passage
    windows: list[tuple[int, int, set[str]]] = field(default_factory=list)

    @classmethod
    def of(cls, passage: Passage) -> _Source:
        spans = [
            (s, e) for s, e in sentence_spans(passage.text) if not _INJECTION.search(passage.text[s:e])
        ]
        words = [content_words(passage.text[s:e]) for s, e in spans]
        # One sentence per window: pairs of sentences let a claim borrow its subject from one
        # sentence and its predicate from the next ("Marie Curie ... moved to Paris").
        return cls(passage, [(s, e, w) for (s, e), w in zip(spans, words)])


def _recall(words: set[str], evidence: set[str]) -> float:
    return len(words & evidence) / len(words) if words else 0.0


def support_score(sentence: set[str], question: set[str], evidence: set[str], names: set[str] | frozenset[str] = frozenset()) -> float:
    """min(novel-word recall, claim recall), or 0 when a name is missing; see the module docstring."""
    if not sentence:
        return 0.0
    novel = sentence - question
    # A fragment ("Warsaw [1].") is read together with its question; a full sentence stands alone.
    asked = question - sentence if len(sentence) < FRAGMENT_WORDS else set()
    claim = (len(sentence & evidence) + 0.5 * len(asked & evidence)) / (len(sentence) + 0.5 * len(asked))
    # A name the evidence lacks is a different fact ("born in Paris on 7 November 1867" against
    # "born in Warsaw on 7 November 1867"): names gate support instead of averaging into it.
    named = not names or names <= evidence
    return min(_recall(novel, evidence) if novel else 1.0, claim) if named else 0.0


def name_words(text: str) -> set[str]:
    """Stems of capitalised words and numbers: the entities a sentence names."""
    picked = " ".join(w for w in _WORD.findall(text) if w[:1].isupper() or w[:1].isdigit())
    return content_words(picked)


def best_evidence(sentence: set[str], question: set[str], source: _Source, n: int, names: set[str] | frozenset[str] = frozenset()) -> Evidence:
    best = Evidence(n, 0, 0, 0.0)
    for start, end, words in source.windows:
        score = support_score(sentence, question, words, names)
        # prefer the shorter window at equal support: it is the sentence that says it
        if score > best.score + 1e-9 or (abs(score - best.score) <= 1e-9 and best.end - best.start > end - start > 0):
            best = Evidence(n, start, end, score)
    return best


def is_not_found(text: str) -> bool:
    return bool(_NOT_FOUND_PATTERNS.search(_CITATION.sub("", text))) or not text.strip()


def suspicious_passages(passages: Sequence[Passage]) -> list[int]:
    """1-based numbers of passages containing text that addresses the model."""
    return [n for n, p in enumerate(passages, start=1) if _INJECTION.search(p.text)]


def _citation(passage: Passage, n: int, evidence: Evidence | None, verified: bool, origin: Origin = "model") -> Citation:
    start, end = (evidence.start, evidence.end) if evidence and evidence.end > evidence.start else (0, len(passage.text))
    return Citation(
        n=n,
        doc_id=passage.doc_id,
        chunk_id=passage.chunk_id,
        source=passage.source,
        title=passage.title,
        start=passage.start + start,
        end=passage.start + end,
        chunk_start=start,
        chunk_end=end,
        text=passage.text[start:end],
        verified=verified,
        score=round(evidence.score, 4) if evidence else None,
        origin=origin,
    )


def check_answer(
    question: str,
    generated: str,
    passages: Sequence[Passage],
    threshold: float = DEFAULT_THRESHOLD,
    best_passages: int | None = None,
) -> Answer:
    """The checked `Answer` for `generated` text written from `passages` (numbered from 1).

    `details` holds the per-sentence checks, removed citations and the raw generation. With no
    supported sentence, the answer says the sources do not contain it and carries the best passages.
    """
    k = len(passages)
    cleaned, removed = strip_invalid(generated.strip(), k)
    sources = [_Source.of(p) for p in passages]
    question_words = content_words(question)
    question_names = name_words(question)
    checks: list[SentenceCheck] = []
    # per (passage, origin): its best evidence over the sentences citing it, and whether any verifies it
    best_for: dict[tuple[int, Origin], Evidence] = {}
    verified_for: dict[tuple[int, Origin], bool] = {}
    declined = is_not_found(cleaned)
    for start, end in ([] if declined else sentence_spans(cleaned)):
        text = cleaned[start:end]
        cited = tuple(dict.fromkeys(n for m in parse_citations(text) for n in m.numbers))
        plain = _CITATION.sub(" ", text)
        words = content_words(plain)
        if not words:
            continue
        names = name_words(plain)
        if len(words) < FRAGMENT_WORDS:
            names |= question_names  # "Paris [3]." names whom the question names
        evidence = [best_evidence(words, question_words, s, n, names) for n, s in enumerate(sources, start=1)]
        top = max(evidence, key=lambda e: e.score, default=None)
        verified = tuple(n for n in cited if evidence[n - 1].score >= threshold)
        unverified = tuple(n for n in cited if n not in verified)
        supported = top is not None and top.score >= threshold
        suggested = top.n if supported and top and cited and unverified and top.n not in cited else None
        # the model left a supported sentence uncited: the check attaches the passage it found
        attributed = top.n if supported and top and not cited else None
        marks: list[tuple[int, Origin, bool]] = [(n, "model", n in verified) for n in cited]
        if attributed is not None:
            marks.append((attributed, "attributed", True))
        for n, origin, ok in marks:
            ev = evidence[n - 1]
            if (n, origin) not in best_for or ev.score > best_for[(n, origin)].score:
                best_for[(n, origin)] = ev
            verified_for[(n, origin)] = verified_for.get((n, origin), False) or ok
        checks.append(
            SentenceCheck(
                text=text.strip(),
                start=start,
                end=end,
                cited=cited,
                support=top.score if top else 0.0,
                supported=supported,
                verified=verified,
                unverified=unverified,
                best=top.n if top and top.score > 0 else None,
                suggested=suggested,
                attributed=attributed,
            )
        )
    details: dict[str, Any] = {
        "generated": generated,
        "sentences": [c.to_dict() for c in checks],
        "removed_citations": removed,
        "unsupported_sentences": [c.text for c in checks if not c.supported],
        "support_threshold": threshold,
    }
    flagged = suspicious_passages(passages)
    if flagged:
        details["suspicious_passages"] = flagged
    if declined or not any(c.supported for c in checks):
        details["reason"] = "the generator said so" if declined else "no sentence is supported by the sources"
        return Answer(
            answer=NOT_FOUND,
            mode="generative",
            citations=[],
            passages=list(passages[:best_passages]),  # retrieval order: the best first
            score=0.0,
            found=False,
            details=details,
        )
    citations = [
        _citation(passages[n - 1], n, best_for[(n, origin)], verified_for[(n, origin)], origin)
        for n, origin in sorted(best_for, key=lambda key: (key[0], key[1] == "attributed"))
    ]
    supported = [c for c in checks if c.supported]
    return Answer(
        answer=cleaned,
        mode="generative",
        citations=citations,
        passages=list(passages),
        score=round(sum(c.support for c in supported) / len(checks), 4),
        found=True,
        details=details,
    )


def annotate_attributed(answer: Answer, mark: str = "*") -> str:
    """The answer text with `[n*]` after each sentence whose citation the check attributed, for
    display: the marker is not the model's, so it is never put into `Answer.answer` itself."""
    text = answer.answer
    inserts = []
    for sentence in answer.details.get("sentences", []) if answer.found else []:
        n = sentence.get("attributed")
        if n is None:
            continue
        end = int(sentence["end"])
        while end > int(sentence["start"]) and (text[end - 1].isspace() or text[end - 1] in ".!?"):
            end -= 1  # before the full stop: "Warsaw [2*]."
        inserts.append((end, f" [{n}{mark}]"))
    for at, piece in sorted(inserts, reverse=True):
        text = text[:at] + piece + text[at:]
    return text


def with_timings(answer: Answer, timings: dict[str, float]) -> Answer:
    return replace(answer, timings={**answer.timings, **timings})
