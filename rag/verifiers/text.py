"""Text the citation check and the verifiers share: sentences, content words, names, and (from
`rag.injection`) the detector of instruction-like text that makes a passage suspicious.

Words are lower-cased and Snowball-stemmed, stop words and answer boilerplate ("answer",
"source", ...) dropped, numbers kept verbatim (number words become digits: "three" is 3).
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from rag.injection import is_instruction as is_instruction  # re-exported for the verifiers and the citation check

_CITATION = re.compile(r"\[(\s*\d{1,3}(?:\s*[,;]\s*\d{1,3})*\s*)\]")
_LEADING_CITATIONS = re.compile(r"(?:\s*\[\s*\d{1,3}(?:\s*[,;]\s*\d{1,3})*\s*\][.,;]?)+")
_PARAGRAPH = re.compile(r"\S(?:.|\n(?![ \t]*\n))*")
_WORD = re.compile(r"[^\W_]+(?:['’.][^\W_]+)*", re.UNICODE)

STOP_WORDS = frozenset(
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


NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty".split()
    )
}
NUMBER_WORDS.update({"thirty": "30", "forty": "40", "fifty": "50", "hundred": "100", "thousand": "1000", "million": "1000000"})
NEGATIONS = frozenset("not no never nor neither none nobody nothing cannot without n't".split())
# Words that turn a date or a quantity into another claim: "before 1903" is not "in 1903".
RELATIONS = frozenset(
    "before after until since prior later earlier than more less fewer over under least most approximately about nearly almost".split()
)


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation, the articles a/an/the and extra whitespace (official SQuAD
    v1.1). Here, not in `rag.evaluation`, because the answer path compares spans with it too."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def raw_words(text: str) -> list[str]:
    """Lower-cased words, with "n't" split off as its own word."""
    out = []
    for raw in _WORD.findall(text.replace("’", "'")):
        word = raw.lower().rstrip(".")
        if word.endswith("n't"):
            out.extend([word[:-3], "n't"])
        else:
            out.append(word)
    return out


def content_words(text: str) -> set[str]:
    """Stemmed, lower-cased content words; numbers kept as written (without separators)."""
    words = []
    for word in raw_words(text):
        if word.endswith("'s"):
            word = word[:-2]
        word = NUMBER_WORDS.get(word, word)
        if not word or word in STOP_WORDS or word in _BOILERPLATE or word == "n't":
            continue
        if word.replace(".", "").replace(",", "").isdigit():
            words.append(word.replace(".", "").replace(",", ""))
        elif len(word) > 1 or word.isdigit():
            words.append(word)
    return set(_stemmer().stemWords([w for w in words if not w.isdigit()])) | {w for w in words if w.isdigit()}


def _kept_words(text: str) -> Iterator[tuple[str, str]]:
    """(word as written, lower-cased without "'s") for each word that is not a stop word,
    boilerplate or a single character: what the name readers below look at."""
    for w in _WORD.findall(text):
        low = w.lower().rstrip(".").removesuffix("'s")
        if low not in STOP_WORDS and low not in _BOILERPLATE and len(low) >= 2:
            yield w, low


def name_sequence(text: str) -> list[str]:
    """Stems of capitalised words (not sentence-initial function words) and numbers, in order."""
    return [
        low.replace(",", "") if low[:1].isdigit() else _stemmer().stemWord(low)
        for w, low in _kept_words(text)
        if w[:1].isupper() or w[:1].isdigit()
    ]


def tagged_stems(text: str) -> list[tuple[str, bool]]:
    """Stems of the words that are neither stop words, boilerplate nor numbers, in order, each with
    whether it was capitalised (a name): the order in which a sentence names who did what."""
    return [(_stemmer().stemWord(low), w[:1].isupper()) for w, low in _kept_words(text) if not low[:1].isdigit()]


def name_words(text: str) -> set[str]:
    """Stems of capitalised words and numbers (number words included): the entities a sentence names."""
    numbers = {NUMBER_WORDS[w] for w in raw_words(text) if w in NUMBER_WORDS}
    return set(name_sequence(text)) | numbers


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


def strip_citations(text: str) -> str:
    return " ".join(_CITATION.sub(" ", text).split())


