"""`/v1/chat/completions` and `/v1/models`, driven by the official `openai` SDK against a real
server on loopback (uvicorn, SQLite, the embedded embedder, the no-answer reader from disk)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai  # the dev extra (scripts/bootstrap installs it): missing, the suite fails
import pytest

from tests.test_api import CORPUS, api_settings, start_server

READER_NA = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "reader-minilm-l6-squad-na"


@dataclass
class Served:
    url: str
    keys: dict[str, str]

    def client(self, key: str = "read") -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=self.keys.get(key, key), max_retries=0, timeout=600)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    from api.keys import KeyStore
    from rag.runtime import Runtime

    home = tmp_path_factory.mktemp("openai-home")
    # verifier=reader: the generative test checks the endpoint uses the server's own citation check.
    # A lower no-answer margin than the default 15: these tests are about the protocol, and the
    # pronoun follow-up ("Where did he die?" -> Paris, margin about 7) must be answered.
    settings = api_settings(
        home,
        reader_model=str(READER_NA),
        answer_mode="extractive",
        verifier="reader",
        reader_guided=False,  # the generative test expects the plain prompt's dropped sentences
        generator_max_tokens=48,
        reader_null_threshold=5.0,
        generation_timeout_s=600,  # a busy 2-core machine loads and runs SmolLM2 slowly (504 at 60 s, load 24)
    )
    runtime = Runtime(settings)
    for name, files in (("docs", sorted(CORPUS.iterdir())), ("other", sorted(CORPUS.iterdir())[:1])):
        report = runtime.ingestor(runtime.writable_collection(name)).ingest_paths([str(p) for p in files])
        assert not report.errors, report.errors
    keys_store = KeyStore(runtime.store)
    keys = {
        "read": keys_store.create("reader", "read")[0],
        "other-only": keys_store.create("other-reader", "read", "other")[0],
    }
    runtime.store.close()
    app, uv, thread, url = start_server(settings)
    yield Served(url=url, keys=keys)
    uv.should_exit = True
    thread.join(timeout=30)


def test_models_lists_the_collections_a_key_may_see(served: Served) -> None:
    assert sorted(m.id for m in served.client().models.list()) == ["docs", "other"]
    assert [m.id for m in served.client("other-only").models.list()] == ["other"]
    assert served.client().models.retrieve("rag:docs").id == "rag:docs"


def test_chat_completion_is_the_checked_answer_with_citations(served: Served) -> None:
    reply = served.client().chat.completions.create(
        model="docs", messages=[{"role": "user", "content": "Where was Marie Curie born?"}]
    )
    content = reply.choices[0].message.content
    assert reply.object == "chat.completion" and reply.choices[0].finish_reason == "stop"
    assert "Warsaw" in content
    markers = [int(n) for n in re.findall(r"\[(\d+)\]", content)]
    citations = reply.model_extra["citations"]
    assert markers and markers == [c["n"] for c in citations]
    passages = reply.model_extra["rag"]["passages"]
    cited = passages[citations[0]["n"] - 1]
    assert cited["source"].endswith("marie-curie.md")
    assert "Warsaw" in cited["text"][citations[0]["chunk_start"] : citations[0]["chunk_end"]]
    assert reply.model_extra["rag"]["found"] is True


def test_rag_prefix_and_earlier_turns_steer_retrieval(served: Served) -> None:
    reply = served.client().chat.completions.create(
        model="rag:docs",
        messages=[
            {"role": "system", "content": "You answer from the documents."},
            {"role": "user", "content": "Tell me about Pierre Curie."},
            {"role": "assistant", "content": "Pierre Curie was a physicist."},
            {"role": "user", "content": "Where did he die?"},  # alone, this retrieves Lippmann first
        ],
    )
    assert "Paris" in reply.choices[0].message.content
    assert reply.model_extra["rag"]["passages"][0]["source"].endswith("pierre-curie.txt")


def test_streaming_sends_chunks_of_the_checked_answer_then_done(served: Served) -> None:
    question = [{"role": "user", "content": "Where was Marie Curie born?"}]
    whole = served.client().chat.completions.create(model="docs", messages=question)
    chunks = list(served.client().chat.completions.create(model="docs", messages=question, stream=True))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len(chunks) > 3  # role, several pieces, the final one
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert [c["n"] for c in chunks[-1].model_extra["citations"]] == [c["n"] for c in whole.model_extra["citations"]]


def test_no_passage_means_no_answer_and_rag_options_ride_in_extra_body(served: Served) -> None:
    reply = served.client().chat.completions.create(
        model="docs",
        messages=[{"role": "user", "content": "Qwzxv plorth?"}],
        extra_body={"retriever": "bm25", "k": 3},  # no word of the question is in the corpus
    )
    assert reply.model_extra["rag"]["found"] is False
    assert reply.model_extra["citations"] == []
    from rag.answer import NOT_IN_SOURCES

    assert reply.choices[0].message.content == NOT_IN_SOURCES


def test_keys_and_scopes_are_those_of_the_api(served: Served) -> None:
    with pytest.raises(openai.AuthenticationError):
        served.client("not-a-key").chat.completions.create(model="docs", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.AuthenticationError):
        served.client("not-a-key").models.list()
    with pytest.raises(openai.PermissionDeniedError):
        served.client("other-only").chat.completions.create(model="docs", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.NotFoundError):
        served.client().chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.UnprocessableEntityError):
        served.client().chat.completions.create(model="docs", messages=[{"role": "assistant", "content": "hi"}])


def test_generative_answers_are_checked_by_the_servers_verifier(served: Served) -> None:
    """SmolLM2 (the embedded generator) writes; the server's configured verifier checks."""
    question = [{"role": "user", "content": "When was Pierre Curie born?"}]
    reply = served.client().chat.completions.create(model="docs", messages=question, extra_body={"mode": "generative"})
    details = reply.model_extra["rag"]["details"]
    assert reply.model_extra["rag"]["mode"] == "generative"
    assert details["verifier"] == "reader"
    content = reply.choices[0].message.content
    assert details["unsupported_sentences"] and not any(s in content for s in details["unsupported_sentences"])
    for n in map(int, re.findall(r"\[(\d+)\]", content)):
        assert any(c["n"] == n for c in reply.model_extra["citations"])
