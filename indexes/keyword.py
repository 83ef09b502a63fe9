"""BM25 keyword index of one collection, derived from SQL and rebuilt whenever SQL changes.

BM25 is computed here (bm25s: a sparse term x chunk score matrix, Lucene's BM25 variant) with our
own analyzer (lower-case, English stop words, Porter stemming from PyStemmer) rather than with
SQLite FTS5 or PostgreSQL `ts_rank`: those two score differently (and `ts_rank` is not BM25), so
the same collection would rank differently on each backend; this way it ranks the same on both.
The index is never edited in place: `Collection` rebuilds it from the ready chunks after any
writer session that changed something and saves it atomically next to `vectors.faiss`, stamped
with a fingerprint of the ready chunk ids it was built from, so staleness is detectable.
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

FORMAT_VERSION = 1

# Lucene's EnglishAnalyzer stop set (what Pyserini/Anserini's BM25 baselines use). The 179-word
# NLTK list removes words such as "not", "no", "against", which carry meaning in claims.
LUCENE_STOPWORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then "
    "there these they this to was will with".split()
)

_TOKEN = re.compile(r"\w+", re.UNICODE)


def _bm25s():  # type: ignore[no-untyped-def]
    try:
        import bm25s
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise MissingDependency("keyword search needs bm25s and PyStemmer: pip install bm25s PyStemmer") from exc
    return bm25s


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
        return self._stem.stemWords(words)  # type: ignore[no-any-return]


class KeywordIndex:
    """BM25 over chunk texts keyed by chunk ids: build, search, ids, save, load.

    bm25s computes the term x chunk score matrix (CSC: `data`, `indices`, `indptr`); a query's
    scores are the sum of its terms' columns, which is all search needs.
    """

    def __init__(
        self,
        spec: KeywordSpec,
        ids: np.ndarray,
        matrix: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
        vocab: dict[str, int],
        fingerprint: tuple[int, ...] = (0, 0, 0),
        generation: int = 0,
    ) -> None:
        self.spec = spec
        self.analyzer = Analyzer(spec)
        self._ids = np.asarray(ids, dtype=np.int64)
        self.matrix = matrix
        self.vocab = vocab
        self.fingerprint = tuple(int(x) for x in fingerprint)
        self.generation = generation

    @classmethod
    def build(
        cls,
        ids: Sequence[int],
        texts: Sequence[str],
        spec: KeywordSpec | None = None,
        fingerprint: tuple[int, int, int] = (0, 0, 0),
        generation: int = 0,
    ) -> KeywordIndex:
        if len(ids) != len(texts):
            raise InvalidInput("keyword index: ids and texts differ in length")
        spec = spec or KeywordSpec()
        bm25s = _bm25s()
        model = bm25s.BM25(k1=spec.k1, b=spec.b, method=spec.method)
        analyzer = Analyzer(spec)
        matrix = None
        vocab: dict[str, int] = {}
        if len(texts):
            tokens = [analyzer(t) for t in texts]
            # bm25s divides by the average length; an all-stop-word corpus must not make it zero.
            if not any(tokens):
                tokens[0] = ["\x00"]
            scores, vocab = model.build_index_from_tokens(tokens, show_progress=False)
            matrix = (
                np.asarray(scores["data"], dtype=np.float32),
                np.asarray(scores["indices"], dtype=np.int32),
                np.asarray(scores["indptr"], dtype=np.int64),
            )
        return cls(spec, np.asarray(list(ids), dtype=np.int64), matrix, dict(vocab), fingerprint, generation)

    # -- reading -----------------------------------------------------------------------------
    def count(self) -> int:
        return int(len(self._ids))

    def ids(self) -> np.ndarray:
        return self._ids.copy()

    def search(self, queries: Sequence[str], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Top-k (scores, chunk ids) per query, best first; chunks sharing no term are left out."""
        results: list[tuple[np.ndarray, np.ndarray]] = []
        for query in queries:
            empty = (np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64))
            if self.matrix is None or k < 1:
                results.append(empty)
                continue
            term_ids = [self.vocab[t] for t in self.analyzer(query) if t in self.vocab]
            if not term_ids:
                results.append(empty)
                continue
            scores = self._scores(term_ids)
            positive = np.flatnonzero(scores > 0)
            if len(positive) > k:
                top = positive[np.argpartition(-scores[positive], k - 1)[:k]]
            else:
                top = positive
            # Ties broken by chunk id so results are reproducible across rebuilds.
            order = np.lexsort((self._ids[top], -scores[top]))
            top = top[order]
            results.append((scores[top].astype(np.float32), self._ids[top]))
        return results

    def _scores(self, term_ids: list[int]) -> np.ndarray:
        """BM25 of every chunk: a repeated query term counts once per occurrence, as in Lucene."""
        assert self.matrix is not None
        data, indices, indptr = self.matrix
        scores = np.zeros(len(self._ids), dtype=np.float32)
        for term in term_ids:
            lo, hi = indptr[term], indptr[term + 1]
            np.add.at(scores, indices[lo:hi], data[lo:hi])
        return scores

    # -- persistence -------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        meta = {
            "format": FORMAT_VERSION,
            "spec": self.spec.to_dict(),
            "fingerprint": list(self.fingerprint),
            "generation": self.generation,
            "count": self.count(),
        }
        arrays: dict[str, np.ndarray] = {
            "meta": np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8),
            "ids": self._ids,
        }
        if self.matrix is not None:
            terms = sorted(self.vocab, key=self.vocab.__getitem__)
            data, indices, indptr = self.matrix
            arrays.update(
                data=data,
                indices=indices,
                indptr=indptr,
                vocab=np.frombuffer(json.dumps(terms).encode("utf-8"), dtype=np.uint8),
            )
        def produce(tmp: str) -> None:
            with open(tmp, "wb") as handle:
                np.savez(handle, **arrays)

        atomic_replace(path, produce)

    @staticmethod
    def read_meta(path: Path) -> dict[str, Any] | None:
        """The saved stamp (fingerprint, generation, spec) without loading the matrix; None if absent."""
        try:
            with np.load(path, allow_pickle=False) as saved:
                return json.loads(bytes(saved["meta"]).decode("utf-8"))  # type: ignore[no-any-return]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            return None  # unreadable: treated as missing, rebuilt from SQL

    @staticmethod
    def read_ids(path: Path) -> np.ndarray | None:
        """The chunk ids a saved index holds (for consistency checks); None if absent or unreadable."""
        try:
            with np.load(path, allow_pickle=False) as saved:
                return np.asarray(saved["ids"], dtype=np.int64)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            return None

    @classmethod
    def load(cls, path: Path) -> KeywordIndex:
        with np.load(path, allow_pickle=False) as saved:
            meta = json.loads(bytes(saved["meta"]).decode("utf-8"))
            if meta.get("format") != FORMAT_VERSION:
                raise InvalidInput(f"{path}: keyword index format {meta.get('format')} is not {FORMAT_VERSION}")
            spec = KeywordSpec.from_dict(meta["spec"])
            ids = saved["ids"]
            matrix = None
            vocab: dict[str, int] = {}
            if "data" in saved.files:
                matrix = (saved["data"], saved["indices"], saved["indptr"])
                terms = json.loads(bytes(saved["vocab"]).decode("utf-8"))
                vocab = {t: i for i, t in enumerate(terms)}
        return cls(spec, ids, matrix, vocab, tuple(meta["fingerprint"]), int(meta.get("generation", 0)))
