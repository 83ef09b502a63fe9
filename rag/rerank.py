"""Second-stage ordering of retrieved candidates: a cross-encoder reranker and MMR diversity.

A cross-encoder reads query and passage together, which bi-encoders and BM25 cannot; published
BEIR figures show gains on SciFact (e.g. BM25 0.665 -> 0.688 nDCG@10 with a MiniLM cross-encoder
reranking the BM25 top 100, Thakur et al. 2021), at the cost of one model call per candidate.
No reranker weights ship offline, so none is on by default and no gain is claimed here.
MMR (Carbonell & Goldstein, 1998) trades relevance against similarity to passages already picked,
so near-duplicate chunks do not fill the top k.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from indexes.errors import InvalidInput, ModelLoadError
from indexes.types import Passage
from rag.fusion import normalize_scores

log = logging.getLogger(__name__)


def passage_text(passage: Passage) -> str:
    """What a reranker or MMR compares: the title first, as the passage was embedded."""
    return f"{passage.title} {passage.text}" if passage.title else passage.text


class CrossEncoderReranker:
    """Any Hugging Face sequence-classification model (id or folder) scoring (query, passage) pairs."""

    def __init__(self, model: str, device: str = "cpu", batch_size: int = 32, max_length: int = 512) -> None:
        try:
            import torch
            from transformers import AutoModelForSequenceClassification, AutoTokenizer
        except ImportError as exc:  # pragma: no cover - declared dependencies
            raise ModelLoadError("reranking needs torch and transformers: pip install torch transformers") from exc
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or Path(model).expanduser().is_dir()
        source = str(Path(model).expanduser()) if Path(model).expanduser().is_dir() else model
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=offline)
            self.model = AutoModelForSequenceClassification.from_pretrained(source, local_files_only=offline)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(
                f"could not load reranker {model!r}: {exc}. Give a local folder or a model id already in the "
                "Hugging Face cache (RAG_RERANKER_MODEL)"
            ) from exc
        self.model.eval().to(device)
        self.torch = torch
        self.device = device
        self.name = model
        self.batch_size = batch_size
        self.max_length = min(max_length, int(getattr(self.tokenizer, "model_max_length", max_length) or max_length))

    def score(self, query: str, texts: Sequence[str]) -> np.ndarray:
        """One relevance score per text; higher is more relevant."""
        out: list[np.ndarray] = []
        with self.torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = list(texts[start : start + self.batch_size])
                inputs = self.tokenizer(
                    [query] * len(batch),
                    batch,
                    padding=True,
                    truncation="only_second",
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                logits = self.model(**inputs).logits.float()
                # One logit: a relevance score (MS MARCO cross-encoders). Two or more: the last
                # class is "relevant", scored by its log-probability.
                scores = logits[:, 0] if logits.shape[-1] == 1 else logits.log_softmax(-1)[:, -1]
                out.append(scores.cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)

    def rerank(self, query: str, passages: Sequence[Passage], k: int | None = None) -> list[Passage]:
        """Passages reordered by the model's score (which replaces the retrieval score)."""
        if not passages:
            return []
        scores = self.score(query, [passage_text(p) for p in passages])
        order = sorted(range(len(passages)), key=lambda i: (-float(scores[i]), i))
        if k is not None:
            order = order[:k]
        return [dataclasses.replace(passages[i], score=float(scores[i]), rank=r + 1) for r, i in enumerate(order)]


def mmr(
    passages: Sequence[Passage], vectors: np.ndarray, k: int, lam: float = 0.7, query: np.ndarray | None = None
) -> list[Passage]:
    """Maximal marginal relevance over ranked candidates:
    pick argmax lam * relevance(d) - (1 - lam) * max over picked p of cos(d, p).

    Relevance is the cosine of the query vector with the candidate (Carbonell & Goldstein's
    form), or without `query` the retrieval score min-max normalised over the list. lam = 1 keeps
    the relevance order; lower values favour diversity.
    """
    if not 0.0 <= lam <= 1.0:
        raise InvalidInput("mmr lambda must be between 0 and 1")
    if len(passages) != len(vectors):
        raise InvalidInput("mmr: one vector per passage is needed")
    if not passages:
        return []
    unit = _unit(np.asarray(vectors, dtype=np.float64))
    if query is not None:
        relevance = unit @ _unit(np.asarray(query, dtype=np.float64).reshape(1, -1))[0]
    else:
        relevance = normalize_scores(np.asarray([p.score for p in passages]), "minmax")
    similarity = unit @ unit.T
    chosen: list[int] = []
    redundancy = np.full(len(passages), -np.inf)
    remaining = list(range(len(passages)))
    while remaining and len(chosen) < k:
        if chosen:
            values = [lam * relevance[i] - (1 - lam) * redundancy[i] for i in remaining]
        else:
            values = [relevance[i] for i in remaining]
        best = remaining[int(np.argmax(values))]
        chosen.append(best)
        remaining.remove(best)
        redundancy = np.maximum(redundancy, similarity[best])
    # The MMR order is the ranking; scores stay the retrieval scores, ranks are renumbered.
    return [dataclasses.replace(passages[i], rank=r + 1) for r, i in enumerate(chosen)]


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)
