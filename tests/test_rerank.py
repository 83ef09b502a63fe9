"""Cross-encoder reranking and MMR diversity over retrieved candidates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from indexes.encoder import resolve_model_path
from indexes.errors import InvalidInput, ModelLoadError
from indexes.store import Collection, CollectionConfig, NewDocument, Store
from indexes.types import Chunk, Document, Passage
from rag.rerank import CrossEncoderReranker, mmr, passage_text
from rag.retrieval import BM25Retriever, DenseRetriever, MMRRetriever, RerankingRetriever

TEXTS = [
    "Aspirin reduces the risk of a second heart attack in adults.",
    "Aspirin lowers the risk of a second heart attack in adults.",
    "Statins reduce cholesterol and the risk of heart disease.",
    "Regular exercise improves heart health and reduces blood pressure.",
    "Vitamin D deficiency is common in northern countries.",
]


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory, encoder) -> Path:  # type: ignore[no-untyped-def]
    """A randomly initialised BERT classifier with the packaged MiniLM tokenizer: no weights to download."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("cross-encoder")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(encoder.spec.model))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=1,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _collection(tmp_path: Path, encoder, texts: list[str], embed: bool) -> Collection:  # type: ignore[no-untyped-def]
    store = Store(tmp_path / "home")
    collection = store.create_collection("r", CollectionConfig(encoder=encoder.spec, dim=encoder.dim))
    vectors = encoder.encode(texts, kind="passage") if embed else np.eye(len(texts), encoder.dim, dtype=np.float32)
    with collection.writer():
        collection.write(
            [
                NewDocument(Document(f"doc{i}", text), f"h{i}", [Chunk(text, 0, len(text), 0)], vectors[i : i + 1])
                for i, text in enumerate(texts)
            ]
        )
    return collection


def test_reranker_orders_passages_by_the_models_scores(tiny_cross_encoder: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    reranker = CrossEncoderReranker(str(tiny_cross_encoder), batch_size=2)  # batches of 2: batching must not matter
    passages = [Passage(i, i, t, 0, len(t), 0, f"doc{i}", "", None, 1.0 - i / 10, i + 1) for i, t in enumerate(TEXTS)]
    reranked = reranker.rerank("does aspirin prevent heart attacks", passages)
    tokenizer = AutoTokenizer.from_pretrained(tiny_cross_encoder)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_cross_encoder).eval()
    with torch.inference_mode():
        inputs = tokenizer(["does aspirin prevent heart attacks"] * len(TEXTS), TEXTS, padding=True, return_tensors="pt")
        expected = model(**inputs).logits[:, 0].numpy()
    assert [p.chunk_id for p in reranked] == list(np.argsort(-expected, kind="stable"))
    np.testing.assert_allclose([p.score for p in reranked], np.sort(expected)[::-1], rtol=1e-4, atol=1e-5)
    assert [p.rank for p in reranked] == [1, 2, 3, 4, 5]


def test_reranking_retriever_reorders_the_base_candidates_and_cuts_to_k(tmp_path: Path, encoder, tiny_cross_encoder: Path) -> None:  # type: ignore[no-untyped-def]
    collection = _collection(tmp_path, encoder, TEXTS, embed=False)
    base = BM25Retriever(collection)
    reranker = CrossEncoderReranker(str(tiny_cross_encoder))
    retriever = RerankingRetriever(base, reranker, depth=4)
    query = "heart risk"
    candidates = base.retrieve(query, 4)
    hits = retriever.retrieve(query, 2)
    scores = reranker.score(query, [passage_text(p) for p in candidates])
    best = [candidates[i].chunk_id for i in np.argsort(-scores, kind="stable")[:2]]
    assert [h.chunk_id for h in hits] == best


def test_a_reranker_that_is_not_on_disk_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="could not load reranker"):
        CrossEncoderReranker(str(tmp_path / "no-such-model"))


def test_mmr_demotes_a_near_duplicate_below_a_different_passage(encoder) -> None:  # type: ignore[no-untyped-def]
    texts = TEXTS[:3]
    passages = [Passage(i, i, t, 0, len(t), 0, f"doc{i}", "", None, s, i + 1) for i, (t, s) in enumerate(zip(texts, [0.9, 0.88, 0.8]))]
    vectors = encoder.encode(texts, kind="passage")
    query = encoder.encode(["aspirin and heart attack risk"], kind="query")[0]
    assert [p.chunk_id for p in mmr(passages, vectors, 3, lam=1.0)] == [0, 1, 2]
    assert [p.chunk_id for p in mmr(passages, vectors, 3, lam=1.0, query=query)][2] == 2
    diverse = mmr(passages, vectors, 3, lam=0.5, query=query)
    assert [p.chunk_id for p in diverse] == [0, 2, 1]
    assert [p.rank for p in diverse] == [1, 2, 3]
    with pytest.raises(InvalidInput):
        mmr(passages, vectors, 3, lam=1.5)


def test_mmr_retriever_uses_the_stored_vectors_to_spread_the_top_k(tmp_path: Path, encoder) -> None:  # type: ignore[no-untyped-def]
    collection = _collection(tmp_path, encoder, TEXTS, embed=True)
    dense = DenseRetriever(collection, encoder)
    query = "aspirin and the risk of heart attack"
    plain = [h.source for h in dense.retrieve(query, 2)]
    assert sorted(plain) == ["doc0", "doc1"]  # the two near-duplicates, in either order
    diverse = MMRRetriever(dense, collection, encoder, lam=0.5, depth=5)
    stored = diverse.vectors_of(dense.retrieve(query, 5))
    np.testing.assert_allclose(stored, encoder.encode([h.text for h in dense.retrieve(query, 5)], kind="passage"), atol=1e-5)
    top = [h.source for h in diverse.retrieve(query, 2)]
    assert top[0] == plain[0] and top[1] not in ("doc0", "doc1")
