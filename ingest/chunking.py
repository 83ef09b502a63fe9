"""Sentence-aware token windows with overlap, measured in the embedder's own tokens.

Sentences come from blingfire (fast, with character offsets). Whole sentences are packed into a
window until the next would exceed the budget; the next window starts with the trailing sentences
that fit in the overlap. A sentence longer than a window is cut at token boundaries. Every chunk
keeps character offsets into the document, so `document.text[start:end] == chunk.text`.
"""

from __future__ import annotations

import bisect
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
    def __init__(self, tokenizer: TextTokenizer, chunk_tokens: int = 200, overlap_tokens: int = 32) -> None:
        if chunk_tokens < 8:
            raise InvalidInput("chunk size must be at least 8 tokens")
        if not 0 <= overlap_tokens < chunk_tokens:
            raise InvalidInput("chunk overlap must be at least 0 and smaller than the chunk size")
        self.tokenizer = tokenizer
        self.chunk_tokens = chunk_tokens
        self.overlap_tokens = overlap_tokens

    def to_dict(self) -> dict[str, int]:
        return {"chunk_tokens": self.chunk_tokens, "chunk_overlap": self.overlap_tokens}

    def split(self, text: str) -> list[Chunk]:
        if not text.strip():
            return []
        token_ends = self.tokenizer.spans(text)
        spans = self._sentence_spans(text, token_ends)
        windows = self._pack(spans)
        chunks: list[Chunk] = []
        for start, end in windows:
            # Trim surrounding whitespace so offsets point at text, not at gaps.
            while start < end and text[start].isspace():
                start += 1
            while end > start and text[end - 1].isspace():
                end -= 1
            if end > start:
                chunks.append(Chunk(text=text[start:end], start=start, end=end, ordinal=len(chunks)))
        return chunks

    def _sentence_spans(self, text: str, tokens: list[tuple[int, int]]) -> list[_Span]:
        import blingfire

        _, offsets = blingfire.text_to_sentences_and_offsets(text)
        token_starts = [s for s, _ in tokens]
        spans: list[_Span] = []
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
                    spans.append(_Span(s, e, piece_end - piece))
                    if piece_end == last:
                        break
            elif count > 0:
                spans.append(_Span(start, end, count))
            previous_end = end
        return spans

    def _pack(self, spans: list[_Span]) -> list[tuple[int, int]]:
        windows: list[tuple[int, int]] = []
        i = 0
        while i < len(spans):
            used = 0
            j = i
            while j < len(spans) and (j == i or used + spans[j].tokens <= self.chunk_tokens):
                used += spans[j].tokens
                j += 1
            windows.append((spans[i].start, spans[j - 1].end))
            if j >= len(spans):
                break
            # Next window starts with the trailing sentences that fit in the overlap.
            back = j
            carried = 0
            while back - 1 > i and carried + spans[back - 1].tokens <= self.overlap_tokens:
                back -= 1
                carried += spans[back].tokens
            i = back
        return windows
