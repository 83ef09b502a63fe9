"""Sentence-aware token windows with overlap, measured in the embedder's own tokens.

Sentences come from blingfire (fast, with character offsets). Whole sentences are packed into a
window until the next would exceed the budget; the next window starts with the trailing sentences
that fit in the overlap. A sentence longer than a window is cut at token boundaries. Every chunk
keeps character offsets into the document, so `document.text[start:end] == chunk.text`.

Memory is bounded by the window, not the document: sentences are found and tokenized in windows of
`window_chars` characters (each window ends where its last sentence starts, so no sentence is cut
at a window edge unless one sentence fills the window), and chunks are packed as spans stream past.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from indexes.encoder.tokenizer import TextTokenizer
from indexes.errors import InvalidInput
from indexes.types import Chunk


@dataclass(frozen=True)
class _Span:
    start: int
    end: int
    tokens: int


class SentenceWindowChunker:
    def __init__(
        self, tokenizer: TextTokenizer, chunk_tokens: int = 200, overlap_tokens: int = 32, window_chars: int = 65_536
    ) -> None:
        if chunk_tokens < 8:
            raise InvalidInput("chunk size must be at least 8 tokens")
        if not 0 <= overlap_tokens < chunk_tokens:
            raise InvalidInput("chunk overlap must be at least 0 and smaller than the chunk size")
        self.tokenizer = tokenizer
        self.chunk_tokens = chunk_tokens
        self.overlap_tokens = overlap_tokens
        self.window_chars = window_chars

    def to_dict(self) -> dict[str, int]:
        return {"chunk_tokens": self.chunk_tokens, "chunk_overlap": self.overlap_tokens}

    def split(self, text: str) -> list[Chunk]:
        if not text.strip():
            return []
        chunks: list[Chunk] = []
        for start, end in self._pack(self._spans(text)):
            # Trim surrounding whitespace so offsets point at text, not at gaps.
            while start < end and text[start].isspace():
                start += 1
            while end > start and text[end - 1].isspace():
                end -= 1
            if end > start:
                chunks.append(Chunk(text=text[start:end], start=start, end=end, ordinal=len(chunks)))
        return chunks

    def _spans(self, text: str) -> Iterator[_Span]:
        """Sentence spans of the whole text, found one window at a time."""
        import blingfire

        position = 0
        while position < len(text):
            end = min(len(text), position + self.window_chars)
            window = text[position:end]
            _, offsets = blingfire.text_to_sentences_and_offsets(window)
            if end < len(text):
                if len(offsets) > 1:  # the last sentence may go on past the window: the next one reads it
                    end = position + offsets[-1][0]
                    offsets = offsets[:-1]
                else:  # one sentence fills the window: cut it at its last white space, if any
                    space = max(window.rfind(" "), window.rfind("\n"))
                    if space > 0:
                        end = position + space
                        offsets = [(s, min(e, space)) for s, e in offsets if s < space]
                window = text[position:end]
            tokens = [(s + position, e + position) for s, e in self.tokenizer.spans(window)]
            yield from self._sentence_spans([(s + position, e + position) for s, e in offsets], tokens)
            position = end

    def _sentence_spans(self, offsets: list[tuple[int, int]], tokens: list[tuple[int, int]]) -> Iterator[_Span]:
        token_starts = [s for s, _ in tokens]
        previous_end = 0
        for start, end in offsets:
            start = max(start, previous_end)
            if end <= start:
                continue
            first = bisect.bisect_left(token_starts, start)
            last = bisect.bisect_left(token_starts, end)
            count = last - first
            if count > self.chunk_tokens:
                # Too long for one window: cut it at token boundaries with the same overlap.
                step = self.chunk_tokens - self.overlap_tokens
                for piece in range(first, last, step):
                    piece_end = min(piece + self.chunk_tokens, last)
                    s = start if piece == first else tokens[piece][0]
                    e = end if piece_end == last else tokens[piece_end - 1][1]
                    yield _Span(s, e, piece_end - piece)
                    if piece_end == last:
                        break
            elif count > 0:
                yield _Span(start, end, count)
            previous_end = end

    def _pack(self, spans: Iterable[_Span]) -> Iterator[tuple[int, int]]:
        """Whole spans into windows of at most `chunk_tokens` (a longer span is a window alone); each
        next window starts with the trailing spans of the last that fit in the overlap."""
        window: list[_Span] = []
        used = 0
        for span in spans:
            if window and used + span.tokens > self.chunk_tokens:
                yield window[0].start, window[-1].end
                back, carried = len(window), 0
                while back - 1 > 0 and carried + window[back - 1].tokens <= self.overlap_tokens:
                    back -= 1
                    carried += window[back].tokens
                window, used = window[back:], carried
            window.append(span)
            used += span.tokens
        if window:
            yield window[0].start, window[-1].end
