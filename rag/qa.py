"""Question in, checked answer out: retrieve, then read (extractive) or generate and check citations.

`AskPipeline` is what `rag ask` and `POST /v1/ask` call. `stream` yields the generated text piece by
piece and then the final `Answer` (checked, with timings), so an SSE endpoint can forward both.
Generative answers are reader-guided when a reader loads (`rag.guided`): its confident spans go into
the prompt, and its verified span stands in (marked) when the generator's sentences fail the check.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Protocol

from indexes.errors import InvalidInput, MissingDependency, ModelLoadError
from indexes.types import Passage
from rag.answer import NOT_IN_SOURCES, Answer, Mode
from rag.citations import DEFAULT_THRESHOLD, check_answer, suspicious_passages
from rag.generation.base import Generator
from rag.guided import guided_answer, reader_hints, span_gate
from rag.prompt import build_messages
from rag.retrieval import Retriever
from rag.verifiers import LexicalVerifier, Verifier

MODES: tuple[Mode, ...] = ("extractive", "generative")
# The prompt asks for one sentence; small models that go on start their loop after a blank line
# (SmolLM2-135M on the demo repeated its answer paragraph until the token limit cut it mid-word).
ANSWER_STOP: tuple[str, ...] = ("\n\n",)
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?:\s*\[\d+\])*(?=\s|$)")


def whole_sentences(text: str) -> str:
    """`text` without a trailing fragment: a draft cut by the token limit ends at its last whole
    sentence (one that ends in . ! ? or a citation), so no half sentence reaches the check."""
    stripped = text.rstrip()
    if not stripped or stripped[-1] in ".!?]\"')":
        return text
    ends = [m.end() for m in _SENTENCE_END.finditer(stripped)]
    return stripped[: ends[-1]] if ends else stripped


class Reader(Protocol):
    def answer(self, question: str, passages: Sequence[Passage], suspicious: Sequence[int] = ()) -> Answer: ...


RetrieverFactory = Callable[[str | None, str | None], Retriever]  # (collection, kind) -> retriever


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000.0, 2)


class AskPipeline:
    """Components arrive as factories so that a mode never loads the other mode's model."""

    def __init__(
        self,
        retriever: RetrieverFactory,
        *,
        reader: Callable[[], Reader] | None = None,
        generator: Callable[[], Generator] | None = None,
        default_mode: Mode = "extractive",
        default_k: int = 5,
        max_k: int = 50,
        support_threshold: float = DEFAULT_THRESHOLD,
        max_tokens: int | None = None,
        verifier: Callable[[], Verifier] | None = None,
        fallback_to_generative: bool = False,
        reader_guided: bool = False,
    ) -> None:
        """`fallback_to_generative`: when no mode is asked for, the default is extractive and no
        reader can be loaded, answer generatively (with a note in `details`) instead of failing.
        `verifier` builds the citation check's support verifier (default: lexical).
        `reader_guided`: generative answers get the reader's spans and its span fallback when a
        reader loads (without one they are generated as before)."""
        self._retriever = retriever
        self._reader_factory = reader
        self._generator_factory = generator
        self._reader: Reader | None = None
        self._generator: Generator | None = None
        self.default_mode = default_mode
        self.default_k = default_k
        self.max_k = max_k
        self.support_threshold = support_threshold
        self.max_tokens = max_tokens
        self._verifier_factory = verifier
        self._verifier: Verifier | None = None
        self.fallback_to_generative = fallback_to_generative
        self.reader_guided = reader_guided
        self._guide_failed: str | None = None

    def with_retriever(self, retriever: RetrieverFactory) -> AskPipeline:
        """The same pipeline (settings, and reader, generator and verifier shared: nothing loads
        twice) over another retriever, e.g. one that filters or widens the query."""
        return AskPipeline(
            retriever,
            reader=lambda: self.reader,
            generator=lambda: self.generator,
            default_mode=self.default_mode,
            default_k=self.default_k,
            max_k=self.max_k,
            support_threshold=self.support_threshold,
            max_tokens=self.max_tokens,
            verifier=lambda: self.verifier,
            fallback_to_generative=self.fallback_to_generative,
            reader_guided=self.reader_guided,
        )

    @property
    def verifier(self) -> Verifier:
        if self._verifier is None:
            factory = self._verifier_factory
            self._verifier = factory() if factory is not None else LexicalVerifier(self.support_threshold)
        return self._verifier

    @property
    def reader(self) -> Reader:
        if self._reader is None:
            if self._reader_factory is None:
                raise MissingDependency("extractive answers need a reader model: set RAG_READER_MODEL")
            self._reader = self._reader_factory()
        return self._reader

    @property
    def generator(self) -> Generator:
        if self._generator is None:
            if self._generator_factory is None:
                raise MissingDependency("generative answers need a generator (RAG_GENERATOR_BACKEND)")
            self._generator = self._generator_factory()
        return self._generator

    def _guide(self) -> Reader | None:
        """The reader that guides generation, or None (not asked for, or it cannot load: then
        generation runs unguided, and `details.guide_note` says why)."""
        if not self.reader_guided or self._reader_factory is None:
            return None
        try:
            return self.reader
        except (ModelLoadError, MissingDependency) as exc:
            self._guide_failed = str(exc).split(" (")[0]
            return None

    def _mode(self, mode: str | None) -> Mode:
        chosen = mode or self.default_mode
        if chosen not in MODES:
            raise InvalidInput(f"mode must be extractive or generative, not {chosen!r}")
        return chosen

    def mode_for(self, mode: str | None) -> tuple[Mode, str | None]:
        """The mode that will answer, and a note when it is not the one asked for: with no mode
        given and the default extractive, a reader that cannot load means a generative answer."""
        chosen = self._mode(mode)
        if chosen == "extractive" and mode is None and self.fallback_to_generative:
            try:
                self.reader  # noqa: B018 - the property loads the reader; a failure here decides the mode
            except (ModelLoadError, MissingDependency) as exc:
                return "generative", f"no extractive reader could be loaded, so this answer is generative ({str(exc).split(' (')[0]})"
        return chosen, None

    def _load_models(self, mode: Mode) -> None:
        """What `mode` needs: the reader, or the generator and the verifier (properties load on first use)."""
        if mode == "extractive":
            self.reader  # noqa: B018
        else:
            self.generator  # noqa: B018
            self.verifier  # noqa: B018
            self._guide()  # the reader that guides generation, when asked for

    def _check_k(self, k: int | None) -> int:
        k = k or self.default_k
        if not 1 <= k <= self.max_k:
            raise InvalidInput(f"k must be between 1 and {self.max_k}, not {k}")
        return k

    def ask(
        self,
        question: str,
        collection: str | None = None,
        mode: str | None = None,
        k: int | None = None,
        retriever: str | None = None,
    ) -> Answer:
        final: Answer | None = None
        for item in self.stream(question, collection, mode, k, retriever, _stream_tokens=False):
            if isinstance(item, Answer):
                final = item
        assert final is not None
        return final

    def stream(
        self,
        question: str,
        collection: str | None = None,
        mode: str | None = None,
        k: int | None = None,
        retriever: str | None = None,
        *,
        _stream_tokens: bool = True,
    ) -> Iterator[str | Answer]:
        """Text pieces as they are generated (generative mode), then the checked `Answer`."""
        started = time.perf_counter()
        k = self._check_k(k)
        chosen, note = self.mode_for(mode)
        # What this mode needs, loaded before any stage is timed: a first call pays seconds here,
        # which `read_ms` or `check_ms` would otherwise report as the cost of reading or checking.
        # The mode's models load in a second thread while this one opens the collection and its
        # encoder: ONNX Runtime, OpenVINO and hashing release the GIL, so a cold process on two
        # cores pays for the slower of the two rather than their sum.
        with ThreadPoolExecutor(1, thread_name_prefix="rag-load") as pool:
            loading = pool.submit(self._load_models, chosen)
            search = self._retriever(collection, retriever)  # the collection's encoder (and reranker)
            loading.result()
        guide_reader = self._guide() if chosen == "generative" else None
        timings = {"load_ms": _ms(started)}
        retrieve_started = time.perf_counter()
        passages = search.retrieve(question, k)
        timings["retrieve_ms"] = _ms(retrieve_started)
        if not passages:
            answer = Answer(NOT_IN_SOURCES, chosen, found=False, details={"reason": "no passages retrieved"})
        elif chosen == "extractive":
            read_started = time.perf_counter()
            answer = self.reader.answer(question, passages, suspicious_passages(passages))
            timings["read_ms"] = _ms(read_started)
            if answer.found:
                yield answer.answer
        else:
            generator = self.generator
            guide, gate = None, None
            if guide_reader is not None:
                guide_started = time.perf_counter()
                guide = guide_reader.answer(question, passages, suspicious_passages(passages))
                # the gates no draft can pass (the reader abstains, the judge rejects its span) are
                # asked first: such a question is refused without generating
                gate = span_gate(question, guide, passages, self.verifier)
                timings["guide_ms"] = _ms(guide_started)
            if gate is not None and gate.reason is not None:
                check_started = time.perf_counter()
                answer = guided_answer(question, guide, passages, self.verifier, check_answer(question, "", passages, verifier=self.verifier), gate)
                timings["check_ms"] = _ms(check_started)
            else:
                messages = build_messages(question, passages, hints=reader_hints(guide))
                generate_started = time.perf_counter()
                if _stream_tokens:
                    pieces: list[str] = []
                    for piece in generator.stream(messages, self.max_tokens, stop=ANSWER_STOP):
                        if not pieces:
                            timings["first_token_ms"] = _ms(generate_started)
                        pieces.append(piece)
                        yield piece
                    text = "".join(pieces)
                else:
                    text = generator.generate(messages, self.max_tokens, stop=ANSWER_STOP)
                timings["generate_ms"] = _ms(generate_started)
                text = whole_sentences(text)
                check_started = time.perf_counter()
                answer = check_answer(question, text, passages, verifier=self.verifier)
                # guided: the model's sentences must state the reader's verified span, else the
                # span in its passage sentence stands in (marked)
                answer = guided_answer(question, guide, passages, self.verifier, answer, gate)
                timings["check_ms"] = _ms(check_started)
            extra = {"generator": generator.name, "reader_guided": guide is not None}
            if guide is not None:
                extra["reader_hints"] = [{"n": n, "text": t} for n, t in reader_hints(guide)]
            elif self._guide_failed:
                extra["guide_note"] = f"generation not reader-guided: {self._guide_failed}"
            answer = replace(answer, details={**answer.details, **extra})
        if note:
            answer = replace(answer, details={**answer.details, "note": note})
        timings["total_ms"] = _ms(started)
        # the pipeline's stages in the order they ran (the reader's own read_ms is replaced)
        yield replace(answer, timings={**timings, **{k: v for k, v in answer.timings.items() if k not in timings}})
