"""Instruction-like passages: text that addresses the model reading it rather than stating facts.

A phrase list ("ignore previous instructions") misses paraphrases ("Note to the assistant
reading this: ... Marie Curie was born in Berlin."), so each sentence is scored on cues that
paraphrases keep: who it addresses (the assistant, the AI, "whoever answers"), second person,
a directive verb about answering, words about questions and answers, obligation ("must",
"always"), and role markers ("SYSTEM:", chat-template tokens). A passage is instruction-like when
one sentence scores at least `THRESHOLD`. The weights and threshold were chosen on the design half
of a labelled set (`tests/data/instruction_passages.jsonl` against SQuAD and SciFact passages) and
are reported on its other half (`python bench/injection.py`, docs/health.md).
"""

from __future__ import annotations

import re

THRESHOLD = 4

_SENTENCE = re.compile(r"[^.!?\n]+(?:[.!?]+|$)|\n")
_READING = r"(is |are )?(reading|answering|summari[sz]ing|processing|processes|reads|answers|asked|asks|generating)"
# Who the sentence talks to: the model, whatever it is called.
_ADDRESSEE = re.compile(
    r"\b(assistants?|chat ?bots?|ai|a\.i\.|llms?|language models?|bots?|gpt|copilot|automated (readers?|systems?|agents?)|"
    rf"models? {_READING}|to the model|the model,|answering (system|engine|agent)|reader of this|"
    rf"(whoever|anyone|anybody|those|any system|any program|whichever system|the system|the tool) {_READING})\b",
    re.IGNORECASE,
)
_SECOND_PERSON = re.compile(r"\b(you|your|yourself)\b", re.IGNORECASE)
# Verbs that direct what the reader of the passage outputs or believes.
_DIRECTIVE = re.compile(
    r"\b(answer|repl(y|ies)|respond|say|state|claim|tell|write|output|print|report|repeat|insist|describe|"
    r"ignore|disregard|forget|override|bypass|pretend|treat|act|assume|mention|include|cite|reveal|"
    r"obey|follow|comply|use|give|put|begin|start|end)(s|ed|ing)?\b",
    re.IGNORECASE,
)
# A sentence that opens with an order about the output.
_IMPERATIVE = re.compile(
    r"(^|[:;,]\s*)\W*(please,?\s+)?(do not |don't |never |always )?(answer|reply|respond|say|state|claim|tell|write|output|print|"
    r"report|repeat|ignore|disregard|forget|pretend|treat|describe|cite|mention)\b",
    re.IGNORECASE,
)
# Calling on the model by name: "Note to the assistant ...", "Dear chatbot", "Chatbots, take note".
_VOCATIVE = re.compile(
    r"\b(note|notes|message|reminder|attention|dear|hey|instructions?|important)( (to|for))?( the| all| any)? "
    r"(assistants?|ai|models?|chat ?bots?|bots?|llms?|language models?|ai readers?)\b"
    r"|^\W*(assistants?|ai|chat ?bots?|bots?|llms?|language models?|models?)\s*,",
    re.IGNORECASE,
)
# What the sentence is about: the exchange itself, not the world.
_META = re.compile(
    r"\b(questions?|queries|query|users?|prompts?|instructions?|answers?|responses?|replies|reply|summary|"
    r"rules?|guidelines|context|documents?|sources?|passages?|conversation|chat|asked|asks|regardless|whatever)\b",
    re.IGNORECASE,
)
_OBLIGATION = re.compile(
    r"\b(must|should|always|never|have to|has to|need to|needs to|make sure|be sure|required|expected|essential|"
    r"important|are to|is to|shall|only ever|no matter|regardless|whatever|whenever)\b",
    re.IGNORECASE,
)
_ROLE = re.compile(
    r"(^|\n|[.!?]\s)\s*(system|assistant|admin|administrator|developer|note to (the )?(ai|assistant|model|bot))\s*:"
    r"|<\|?(system|im_start|im_end|assistant|user)\|?>|\[/?INST\]|###\s*(instruction|system)",
    re.IGNORECASE,
)
_OVERRIDE = re.compile(
    r"\b(ignore|disregard|forget|overrides?|bypass)\b.{0,40}\b(instructions?|prompt|rules?|above|previous|guidelines|context|"
    r"everything|other (documents|sources|passages))\b|\bsystem prompt\b|\bnew (instructions?|rules?|task)\b|\bfrom now on\b"
    r"|\b(the|your|an?) (answer|response|reply) to (every|all|any|each) (questions?|quer(y|ies))\b",
    re.IGNORECASE | re.DOTALL,
)


def sentence_score(sentence: str) -> int:
    """How strongly one sentence addresses the model (0: not at all)."""
    addressee = bool(_ADDRESSEE.search(sentence))
    second = bool(_SECOND_PERSON.search(sentence))
    imperative = bool(_IMPERATIVE.search(sentence) or _VOCATIVE.search(sentence))
    obligation = bool(_OBLIGATION.search(sentence))
    score = 2 * addressee + second + 2 * imperative + bool(_DIRECTIVE.search(sentence)) + bool(_META.search(sentence)) + obligation
    if not (second or imperative or obligation):
        score = min(score, 3)  # describes rather than orders: "language models can answer questions"
    return score + 4 * bool(_ROLE.search(sentence)) + 4 * bool(_OVERRIDE.search(sentence))


def instruction_score(text: str) -> int:
    """The highest sentence score in `text`."""
    return max((sentence_score(m.group()) for m in _SENTENCE.finditer(text) if m.group().strip()), default=0)


def is_instruction(text: str) -> bool:
    """Text that addresses the model ("ignore your instructions", "Note to the assistant reading
    this: ...", "SYSTEM: ...")."""
    return instruction_score(text) >= THRESHOLD
