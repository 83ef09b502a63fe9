"""Checks what a generator wrote against the passages it was given.

Citations `[n]` (also `[1, 2]`, `[1][2]`) are parsed; numbers with no passage are removed and
reported. Each sentence is then judged by a support verifier (`rag.verifiers`: lexical, reader or
nli, chosen by `RAG_VERIFIER`), which says for every passage whether it supports the sentence:

- a sentence is verified only by a passage that supports the whole claim; fragments (ending on a
  function word) and a last sentence cut by the token limit are never verified;
- a passage flagged suspicious (it addresses the model: "ignore your instructions", "SYSTEM: new
  rule ...") is never the sole support of a verified sentence, and its instruction-like sentences
  are never evidence at all: a passage cannot vouch for what it orders the model to say;
- a sentence left uncited that a passage supports gets that passage attached with
  `origin="attributed"` (shown `[n*]`), so a user can tell the model's citations from the
  system's; a sentence the model cited stays judged on the citation it wrote (a wrong one stays
  unverified, the right one only `suggested`).

The answer is the supported sentences only, with the citations they make; the others are dropped
and listed in `details.unsupported_sentences` (the whole draft stays in `details.generated`). With
no supported sentence the answer is "Not in the sources." with the best passages: unverified text
is never presented as the answer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from indexes.types import Passage
from rag.answer import NOT_IN_SOURCES, Answer, Citation
from rag.verifiers.base import Evidence, Verifier, is_fragment
from rag.verifiers.lexical import DEFAULT_THRESHOLD, LexicalVerifier
from rag.verifiers.text import _CITATION, content_words, is_instruction, sentence_spans

__all__ = [
    "DEFAULT_THRESHOLD", "annotate_attributed", "check_answer", "content_words", "is_not_found", "parse_citations",
    "sentence_spans", "strip_invalid", "suspicious_passages",
]

Origin = Literal["model", "attributed"]

_NOT_FOUND_PATTERNS = re.compile(
    r"\b(unanswerable|do(es)? not (contain|provide|mention|say|include)|not (found|mentioned|given|stated) in|"
    r"not in the (sources|passages|context)|no information|cannot be answered|can ?not answer|not enough information|don'?t know)\b",
    re.IGNORECASE,
)


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
    fragment: bool = False
    repeated: bool = False  # supported, but said word for word before: shown once

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
            "fragment": self.fragment,
            "repeated": self.repeated,
        }


def is_not_found(text: str) -> bool:
    return bool(_NOT_FOUND_PATTERNS.search(_CITATION.sub("", text))) or not text.strip()


def suspicious_passages(passages: Sequence[Passage]) -> list[int]:
    """1-based numbers of passages containing text that addresses the model."""
    return [n for n, p in enumerate(passages, start=1) if is_instruction(p.text) or is_instruction(p.title)]


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
    verifier: Verifier | None = None,
) -> Answer:
    """The checked `Answer` for `generated` text written from `passages` (numbered from 1).

    `verifier` judges support (default: the lexical one at `threshold`). The answer text is the
    supported sentences; `details` holds the per-sentence checks, the dropped sentences, removed
    citations and the raw generation. With no supported sentence, the answer is "Not in the
    sources." with the best passages.
    """
    verifier = verifier or LexicalVerifier(threshold)
    k = len(passages)
    cleaned, removed = strip_invalid(generated.strip(), k)
    flagged = set(suspicious_passages(passages))
    declined = is_not_found(cleaned)
    spans = [] if declined else sentence_spans(cleaned)
    asked = content_words(question)
    pieces = []
    for i, (start, end) in enumerate(spans):
        text = cleaned[start:end]
        plain = " ".join(_CITATION.sub(" ", text).split())
        words = content_words(plain)
        if words:
            # a fragment, a sentence cut by the token limit, or the question restated asserts nothing checkable
            empty = is_fragment(text, last=i == len(spans) - 1) or not (words - asked)
            pieces.append((start, end, text, plain, empty))
    judged = verifier.verify(question, [p[3] for p in pieces if not p[4]], passages) if pieces else []
    verdicts = iter(judged)
    checks: list[SentenceCheck] = []
    # per (passage, origin): its best evidence over the sentences citing it, and whether any verifies it
    best_for: dict[tuple[int, Origin], Evidence] = {}
    verified_for: dict[tuple[int, Origin], bool] = {}
    said: set[str] = set()  # small models loop: a supported sentence repeated is shown once
    for start, end, text, plain, fragment in pieces:
        cited = tuple(dict.fromkeys(n for m in parse_citations(text) for n in m.numbers))
        evidence = [Evidence(n, 0, 0, 0.0) for n in range(1, k + 1)] if fragment else next(verdicts)
        # a suspicious passage is never the sole support: some clean passage must support it too
        clean = [e for e in evidence if e.supported and e.n not in flagged]
        supported = bool(clean)
        top = max(clean, key=lambda e: e.score, default=None) or max(evidence, key=lambda e: e.score, default=None)
        verified = tuple(n for n in cited if supported and evidence[n - 1].supported)
        unverified = tuple(n for n in cited if n not in verified)
        suggested = top.n if supported and top and cited and unverified and top.n not in cited else None
        # the model left a supported sentence uncited: the check attaches the passage it found
        attributed = top.n if supported and top and not cited else None
        marks: list[tuple[int, Origin, bool]] = [(n, "model", n in verified) for n in cited]
        if attributed is not None:
            marks.append((attributed, "attributed", True))
        repeated = supported and plain.lower() in said
        if supported:
            said.add(plain.lower())
        for n, origin, ok in marks if supported and not repeated else ():  # a dropped sentence's citations go with it
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
                fragment=fragment,
                repeated=repeated,
            )
        )
    shown, offsets = _supported_only(cleaned, checks)
    details: dict[str, Any] = {
        "generated": generated,
        # offsets into the answer text; a dropped sentence is not in it
        "sentences": [{**c.to_dict(), "start": at[0], "end": at[1]} for c, at in zip(checks, offsets)],
        "removed_citations": removed,
        "unsupported_sentences": [c.text for c in checks if not c.supported],
        "verifier": verifier.name,
    }
    if verifier.note:
        details["verifier_note"] = verifier.note
    if flagged:
        details["suspicious_passages"] = sorted(flagged)
    if declined or not any(c.supported for c in checks):
        details["reason"] = "the generator said so" if declined else "no sentence is supported by the sources"
        return Answer(
            answer=NOT_IN_SOURCES,
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
    kept = [c for c in checks if c.supported]
    return Answer(
        answer=shown,
        mode="generative",
        citations=citations,
        passages=list(passages),
        score=round(sum(c.support for c in kept) / len(checks), 4),
        found=True,
        details=details,
    )


def _supported_only(text: str, checks: Sequence[SentenceCheck]) -> tuple[str, list[tuple[int | None, int | None]]]:
    """`text` without the sentences no source supports or that repeat an earlier one (and the
    space after each), and every check's offsets in what is left (None for a dropped one): only
    verified text is the answer."""
    out: list[str] = []
    size = 0
    at = 0
    offsets: list[tuple[int | None, int | None]] = []
    for check in checks:
        out.append(text[at : check.start])
        size += check.start - at
        if check.supported and not check.repeated:
            out.append(text[check.start : check.end])
            offsets.append((size, size + check.end - check.start))
            size += check.end - check.start
            at = check.end
        else:
            offsets.append((None, None))
            at = check.end
            while at < len(text) and text[at].isspace():
                at += 1
    out.append(text[at:])
    return "".join(out).rstrip(), offsets


def annotate_attributed(answer: Answer, mark: str = "*") -> str:
    """The answer text with `[n*]` after each sentence whose citation the check attributed, for
    display: the marker is not the model's, so it is never put into `Answer.answer` itself."""
    text = answer.answer
    inserts = []
    for sentence in answer.details.get("sentences", []) if answer.found else []:
        n = sentence.get("attributed")
        if n is None or sentence["start"] is None:  # not in the answer: dropped or repeated
            continue
        end = int(sentence["end"])
        while end > int(sentence["start"]) and (text[end - 1].isspace() or text[end - 1] in ".!?"):
            end -= 1  # before the full stop: "Warsaw [2*]."
        inserts.append((end, f" [{n}{mark}]"))
    for at, piece in sorted(inserts, reverse=True):
        text = text[:at] + piece + text[at:]
    return text
