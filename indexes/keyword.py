"""BM25 keyword search over immutable segments of term frequencies, Lucene's way.

Each write batch adds one `TermSegment` (a term x chunk matrix of term frequencies in CSC form,
plus chunk lengths) beside its FAISS segment; BM25 (Lucene's variant: idf = ln(1 + (N - df + 0.5)
/ (df + 0.5))) is computed at query time from collection-wide statistics summed over segments, so
a batch never rebuilds what earlier batches indexed. As in Lucene, chunks of removed documents
count in N and df until their segment is compacted; SQL filters them out of results.

Our analyzer (lower-case, English stop words, Porter stemming from PyStemmer) rather than SQLite
FTS5 or PostgreSQL `ts_rank`: those two score differently (and `ts_rank` is not BM25), so the
same collection would rank differently on each backend; this way it ranks the same on both.
bm25s, used before, precomputes every score with the corpus-wide idf, which a per-batch update
cannot keep.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from indexes.atomic import atomic_replace
from indexes.errors import InvalidInput, MissingDependency

FORMAT_VERSION = 2

# Lucene's EnglishAnalyzer stop set (what Pyserini/Anserini's BM25 baselines use). The 179-word
# NLTK list removes words such as "not", "no", "against", which carry meaning in claims.
LUCENE_STOPWORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then "
    "there these they this to was will with".split()
)

_TOKEN = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class KeywordSpec:
    """How text is analysed and scored; saved with the index so a reload scores queries the same way."""

    k1: float = 0.9
    b: float = 0.4
    method: str = "lucene"
    stemmer: str = "porter"  # a PyStemmer algorithm name, or "" for none
    stopwords: str = "lucene"  # "lucene", "none"

    def to_dict(self) -> dict[str, Any]:
        return {"k1": self.k1, "b": self.b, "method": self.method, "stemmer": self.stemmer, "stopwords": self.stopwords}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KeywordSpec:
        return cls(
            k1=float(data.get("k1", 0.9)),
            b=float(data.get("b", 0.4)),
            method=str(data.get("method", "lucene")),
            stemmer=str(data.get("stemmer", "porter")),
            stopwords=str(data.get("stopwords", "lucene")),
        )


class Analyzer:
    """Text -> index terms: lower-case word tokens, stop words dropped, stemmed (cached per word)."""

    def __init__(self, spec: KeywordSpec) -> None:
        self.spec = spec
        if spec.stopwords == "lucene":
            self.stopwords: frozenset[str] = LUCENE_STOPWORDS
        elif spec.stopwords == "none":
            self.stopwords = frozenset()
        else:
            raise InvalidInput(f"unknown stop word list {spec.stopwords!r}; use 'lucene' or 'none'")
        self._stem = None
        if spec.stemmer:
            try:
                import Stemmer
            except ImportError as exc:  # pragma: no cover - a declared dependency
                raise MissingDependency("keyword search needs PyStemmer: pip install PyStemmer") from exc
            self._stem = Stemmer.Stemmer(spec.stemmer)
            self._stem.maxCacheSize = 200_000

    def __call__(self, text: str) -> list[str]:
        words = [w for w in _TOKEN.findall(text.lower()) if w not in self.stopwords]
        if self._stem is None:
            return words
        return self._stem.stemWords(words)


class TermSegment:
    """Term frequencies of one batch of chunks: vocabulary, CSC postings, chunk lengths, ids."""

    def __init__(self, ids: np.ndarray, vocab: dict[str, int], tf: tuple[np.ndarray, np.ndarray, np.ndarray], lengths: np.ndarray) -> None:
        self.ids = np.asarray(ids, dtype=np.int64)
        self.vocab = vocab
        self.data, self.indices, self.indptr = tf  # per term: chunk positions and counts
        self.lengths = np.asarray(lengths, dtype=np.float32)

    @classmethod
    def build(cls, ids: Sequence[int] | np.ndarray, texts: Sequence[str], analyzer: Analyzer) -> TermSegment:
        if len(ids) != len(texts):
            raise InvalidInput("keyword index: ids and texts differ in length")
        vocab: dict[str, int] = {}
        rows: list[int] = []  # term id per posting
        cols: list[int] = []  # chunk position per posting
        counts: list[int] = []
        lengths = np.zeros(len(texts), dtype=np.float32)
        for position, text in enumerate(texts):
            terms = analyzer(text)
            lengths[position] = len(terms)
            bag: dict[int, int] = {}
            for term in terms:
                tid = vocab.setdefault(term, len(vocab))
                bag[tid] = bag.get(tid, 0) + 1
            for tid, n in bag.items():
                rows.append(tid)
                cols.append(position)
                counts.append(n)
        order = np.lexsort((np.asarray(cols, dtype=np.int64), np.asarray(rows, dtype=np.int64)))
        term_of = np.asarray(rows, dtype=np.int64)[order]
        indptr = np.zeros(len(vocab) + 1, dtype=np.int64)
        np.add.at(indptr, term_of + 1, 1)
        np.cumsum(indptr, out=indptr)
        return cls(
            np.asarray(list(ids), dtype=np.int64),
            vocab,
            (
                np.asarray(counts, dtype=np.float32)[order],
                np.asarray(cols, dtype=np.int32)[order],
                indptr,
            ),
            lengths,
        )

    def count(self) -> int:
        return int(len(self.ids))

    def document_frequency(self, term: str) -> int:
        tid = self.vocab.get(term)
        return 0 if tid is None else int(self.indptr[tid + 1] - self.indptr[tid])

    def postings(self, term: str) -> tuple[np.ndarray, np.ndarray]:
        """(chunk positions, term frequencies) of one term."""
        tid = self.vocab.get(term)
        if tid is None:
            return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32)
        lo, hi = self.indptr[tid], self.indptr[tid + 1]
        return self.indices[lo:hi], self.data[lo:hi]

    # -- persistence -------------------------------------------------------------------------
    def save(self, path: Path, spec: KeywordSpec) -> None:
        meta = {"format": FORMAT_VERSION, "spec": spec.to_dict(), "count": self.count()}
        terms = sorted(self.vocab, key=self.vocab.__getitem__)
        arrays: dict[str, Any] = {  # Any: numpy's stub would match the dict to savez's allow_pickle
            "meta": np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8),
            "ids": self.ids,
            "data": self.data,
            "indices": self.indices,
            "indptr": self.indptr,
            "lengths": self.lengths,
            "vocab": np.frombuffer(json.dumps(terms).encode("utf-8"), dtype=np.uint8),
        }

        def produce(tmp: str) -> None:
            with open(tmp, "wb") as handle:
                np.savez(handle, **arrays)

        atomic_replace(path, produce)

    @classmethod
    def load(cls, path: Path) -> tuple[TermSegment, KeywordSpec]:
        with np.load(path, allow_pickle=False) as saved:
            meta = json.loads(bytes(saved["meta"]).decode("utf-8"))
            if meta.get("format") != FORMAT_VERSION:
                raise InvalidInput(f"{path}: keyword segment format {meta.get('format')} is not {FORMAT_VERSION}")
            terms = json.loads(bytes(saved["vocab"]).decode("utf-8"))
            segment = cls(
                saved["ids"],
                {t: i for i, t in enumerate(terms)},
                (saved["data"], saved["indices"], saved["indptr"]),
                saved["lengths"],
            )
        return segment, KeywordSpec.from_dict(meta["spec"])

    @staticmethod
    def read_ids(path: Path) -> np.ndarray | None:
        """The chunk ids a saved segment holds (for consistency checks); None if absent or unreadable."""
        try:
            with np.load(path, allow_pickle=False) as saved:
                return np.asarray(saved["ids"], dtype=np.int64)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            return None


class KeywordIndex:
    """BM25 over several term segments with collection-wide statistics: build, search, ids."""

    def __init__(self, spec: KeywordSpec, segments: Sequence[TermSegment]) -> None:
        self.spec = spec
        self.analyzer = Analyzer(spec)
        self.segments = list(segments)
        self.total = sum(s.count() for s in self.segments)
        lengths = sum(float(s.lengths.sum()) for s in self.segments)
        self.average_length = lengths / self.total if self.total else 1.0
        if self.average_length <= 0:
            self.average_length = 1.0

    @classmethod
    def build(cls, ids: Sequence[int], texts: Sequence[str], spec: KeywordSpec | None = None) -> KeywordIndex:
        """One segment over `texts` (tests, and a small collection in memory)."""
        spec = spec or KeywordSpec()
        return cls(spec, [TermSegment.build(ids, texts, Analyzer(spec))])

    def count(self) -> int:
        return self.total

    def ids(self) -> np.ndarray:
        parts = [s.ids for s in self.segments]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def search(
        self, queries: Sequence[str], k: int, allowed: np.ndarray | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Top-k (scores, chunk ids) per query, best first; chunks sharing no term are left out.
        With `allowed` (sorted chunk ids), only those chunks are scored (a filtered search)."""
        masks = None if allowed is None else [np.isin(s.ids, allowed) for s in self.segments]
        results: list[tuple[np.ndarray, np.ndarray]] = []
        for query in queries:
            results.append(self._search_one(query, k, masks))
        return results

    def _search_one(self, query: str, k: int, masks: list[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        empty = (np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64))
        terms = self.analyzer(query)
        if k < 1 or not terms or not self.total:
            return empty
        k1, b = self.spec.k1, self.spec.b
        # A repeated query term counts once per occurrence, as in Lucene.
        idf: dict[str, float] = {}
        for term in set(terms):
            df = sum(s.document_frequency(term) for s in self.segments)
            if df:
                idf[term] = float(np.log(1.0 + (self.total - df + 0.5) / (df + 0.5)))
        if not idf:
            return empty
        all_scores: list[np.ndarray] = []
        all_ids: list[np.ndarray] = []
        for number, segment in enumerate(self.segments):
            scores = np.zeros(segment.count(), dtype=np.float32)
            norm = k1 * (1.0 - b + b * segment.lengths / self.average_length)
            for term in terms:
                if term not in idf:
                    continue
                positions, tf = segment.postings(term)
                if len(positions):
                    # A term's postings name each chunk once, so plain fancy indexing adds correctly
                    # (and is several times faster than np.add.at).
                    scores[positions] += idf[term] * tf / (tf + norm[positions])
            if masks is not None:
                scores[~masks[number]] = 0.0
            hit = np.flatnonzero(scores > 0)
            all_scores.append(scores[hit])
            all_ids.append(segment.ids[hit])
        scores = np.concatenate(all_scores)
        ids = np.concatenate(all_ids)
        if len(scores) > k:
            top = np.argpartition(-scores, k - 1)[:k]
            scores, ids = scores[top], ids[top]
        # Ties broken by chunk id so results are reproducible across rebuilds.
        order = np.lexsort((ids, -scores))
        return scores[order].astype(np.float32), ids[order]


def merge_term_segments(segments: Sequence[TermSegment], keep: Sequence[np.ndarray]) -> TermSegment:
    """One segment holding the chunks of `segments` selected by the boolean masks `keep`, without
    re-analysing any text: postings are re-keyed to a shared vocabulary and concatenated."""
    vocab: dict[str, int] = {}
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    data: list[np.ndarray] = []
    ids: list[np.ndarray] = []
    lengths: list[np.ndarray] = []
    offset = 0
    for segment, mask in zip(segments, keep):
        mask = np.asarray(mask, dtype=bool)
        terms = sorted(segment.vocab, key=segment.vocab.__getitem__)
        global_of = np.asarray([vocab.setdefault(t, len(vocab)) for t in terms], dtype=np.int64)
        term_of = np.repeat(np.arange(len(terms), dtype=np.int64), np.diff(segment.indptr))
        new_position = np.cumsum(mask) - 1
        kept = mask[segment.indices]
        rows.append(global_of[term_of[kept]])
        cols.append(new_position[segment.indices[kept]] + offset)
        data.append(segment.data[kept])
        ids.append(segment.ids[mask])
        lengths.append(segment.lengths[mask])
        offset += int(mask.sum())
    row = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    col = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    order = np.lexsort((col, row))
    indptr = np.zeros(len(vocab) + 1, dtype=np.int64)
    np.add.at(indptr, row + 1, 1)
    np.cumsum(indptr, out=indptr)
    return TermSegment(
        np.concatenate(ids) if ids else np.zeros(0, np.int64),
        vocab,
        ((np.concatenate(data) if data else np.zeros(0, np.float32))[order], col[order].astype(np.int32), indptr),
        np.concatenate(lengths) if lengths else np.zeros(0, np.float32),
    )
