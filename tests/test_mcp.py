"""`rag mcp` spoken to by the `mcp` package's own client over stdio, against a real collection."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import anyio
import mcp  # noqa: F401  (the dev extra, scripts/bootstrap installs it: missing, the suite fails)
import pytest

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "examples" / "corpus"
READER_NA = REPO.parent / "shared" / "models" / "reader-minilm-l6-squad-na"


async def _conversation(home: Path) -> dict[str, Any]:
    from mcp import Client, StdioServerParameters

    rag = shutil.which("rag", path=str(Path(sys.executable).parent)) or "rag"
    env = {
        "RAG_HOME": str(home),
        "RAG_COLLECTION": "docs",
        "RAG_READER_MODEL": str(READER_NA),
        "RAG_ANSWER_MODE": "extractive",
        "RAG_GENERATOR_MAX_TOKENS": "48",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        **({"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}),
    }
    params = StdioServerParameters(command=rag, args=["mcp"], env=env)
    out: dict[str, Any] = {}
    async with Client(params, read_timeout_seconds=120) as client:
        out["tools"] = {t.name: t for t in (await client.list_tools()).tools}
        out["collections"] = await client.call_tool("list_collections", {})
        out["search"] = await client.call_tool("search", {"query": "What is the Curie temperature?", "k": 3})
        out["ask"] = await client.call_tool("ask", {"question": "Where was Marie Curie born?", "collection": "docs"})
        out["generative"] = await client.call_tool(
            "ask", {"question": "Where was Pierre Curie born?", "collection": "docs", "mode": "generative"}
        )
        out["missing"] = await client.call_tool("search", {"query": "anything", "collection": "nope"})
        out["bad_k"] = await client.call_tool("search", {"query": "anything", "k": 500})
        out["bad_many"] = await client.call_tool("ask", {"question": "", "k": "many", "mode": "poetic"})
        out["no_query"] = await client.call_tool("search", {"k": 3})
    return out


@pytest.fixture(scope="module")
def talk(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from rag.runtime import Runtime
    from rag.settings import Settings

    home = tmp_path_factory.mktemp("mcp-home")
    runtime = Runtime(Settings(home=home))
    report = runtime.ingestor(runtime.writable_collection("docs")).ingest_paths([str(CORPUS)])
    assert not report.errors and report.documents_added == 6
    runtime.store.close()
    return anyio.run(_conversation, home)


def test_the_three_tools_have_typed_inputs(talk: dict[str, Any]) -> None:
    tools = talk["tools"]
    assert set(tools) == {"search", "ask", "list_collections"}
    search = tools["search"].input_schema
    assert search["required"] == ["query"]
    assert search["properties"]["k"]["type"] == "integer" and search["properties"]["k"]["maximum"] == 50
    ask = tools["ask"].input_schema
    assert ask["required"] == ["question"]
    modes = ask["properties"]["mode"]["anyOf"][0]["enum"]
    assert modes == ["extractive", "generative"]


def test_list_collections_and_search_answer_from_the_collection(talk: dict[str, Any]) -> None:
    collections = talk["collections"]
    assert not collections.is_error
    listed = collections.structured_content["result"]
    assert [(c["name"], c["documents"]) for c in listed] == [("docs", 6)]
    search = talk["search"]
    assert not search.is_error
    passages = search.structured_content["passages"]
    assert len(passages) == 3 and passages[0]["source"].endswith("pierre-curie.txt")
    assert "Curie temperature" in passages[0]["text"]


def test_ask_returns_the_checked_answer_with_its_citation(talk: dict[str, Any]) -> None:
    result = talk["ask"].structured_content
    assert result["found"] is True and result["mode"] == "extractive"
    assert "Warsaw" in result["answer"]
    citation = result["citations"][0]
    assert f"[{citation['n']}]" in result["answer"]
    assert result["passages"][citation["n"] - 1]["source"].endswith("marie-curie.md")
    assert "Warsaw" in citation["text"]


def test_a_generative_ask_returns_only_the_verified_sentences_and_names_the_dropped_ones(talk: dict[str, Any]) -> None:
    """The defaults: the reader guides SmolLM2, the shipped judge checks; the draft's sentence that
    no source supports (France) is dropped and the reader's span sentence stands in, marked."""
    result = talk["generative"].structured_content
    assert result["found"] is True and result["mode"] == "generative" and result["verifier"] == "nli"
    assert result["answer"] == "Pierre Curie was born in Paris on 15 May 1859 [1]." and result["fallback"] == "reader_span"
    assert result["dropped"] == ["Pierre Curie was born in Paris, France, on 15 May 1859."]


def test_errors_are_tool_errors_with_a_clear_message(talk: dict[str, Any]) -> None:
    assert talk["missing"].is_error
    assert "nope" in talk["missing"].content[0].text
    assert talk["bad_k"].is_error
    assert "less than or equal to 50" in talk["bad_k"].content[0].text


def test_invalid_arguments_come_back_as_one_line_naming_each_field(talk: dict[str, Any]) -> None:
    """Issue 26 item 16: the library's argument check answered pydantic's multi-line report
    (error count, input_value=..., a pydantic.dev URL per field)."""
    bad_k = talk["bad_k"]
    assert bad_k.is_error and len(bad_k.content) == 1
    assert bad_k.content[0].text == "invalid arguments for search: k: Input should be less than or equal to 50"
    many = talk["bad_many"].content[0].text
    assert talk["bad_many"].is_error and "\n" not in many and many.startswith("invalid arguments for ask: ")
    assert "question: String should have at least 1 character" in many
    assert "k: Input should be a valid integer" in many and "mode: Input should be 'extractive' or 'generative'" in many
    assert "pydantic" not in many and "input_value" not in many
    assert talk["no_query"].content[0].text == "invalid arguments for search: query: Field required"


def test_a_malformed_line_gets_a_parse_error_reply_and_the_server_keeps_serving(tmp_path: Path) -> None:
    """Issue 26 item 16: a line that is not JSON got no reply at all (JSON-RPC says -32700)."""
    import json
    import subprocess

    rag = shutil.which("rag", path=str(Path(sys.executable).parent)) or "rag"
    env = {**os.environ, "RAG_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    process = subprocess.Popen([rag, "mcp"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert process.stdin is not None and process.stdout is not None

    def line() -> str:
        import select

        ready, _, _ = select.select([process.stdout], [], [], 120)
        assert ready, "no reply within 120 s"
        return process.stdout.readline()  # type: ignore[union-attr]

    try:
        process.stdin.write("{this is not json\n")
        process.stdin.flush()
        reply = json.loads(line())
        assert reply["error"]["code"] == -32700 and reply["id"] is None and "\n" not in reply["error"]["message"]
        hello = {
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
        }  # fmt: skip
        process.stdin.write(json.dumps(hello) + "\n")
        process.stdin.flush()
        answer = json.loads(line())
        assert answer["id"] == 1 and answer["result"]["serverInfo"]["name"] == "rag"
    finally:
        process.kill()
        process.wait(timeout=30)
