"""Filters on every surface: the HTTP API, the `openai` SDK, the MCP client and the CLI, on a real
server over SciFact abstracts tagged with tenants; and tenant-scoped keys tried as an attacker."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SCIFACT, invoke
from tests.test_api import Server, api_settings, start_server

N_DOCS = 60


def _tenant(i: int) -> str:
    return f"t{i % 3}"


def _records() -> list[dict[str, Any]]:
    records = []
    with open(SCIFACT / "corpus.jsonl", encoding="utf-8") as handle:
        for i, line in enumerate(handle):
            if i == N_DOCS:
                break
            row = json.loads(line)
            records.append(
                {
                    "id": row["_id"],
                    "title": row["title"],
                    "text": row["text"],
                    "metadata": {"tenant": _tenant(i), "year": 2000 + i % 25, "tags": ["even" if i % 2 == 0 else "odd"]},
                }
            )
    return records


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    from api.keys import KeyStore
    from indexes.types import Document
    from rag.runtime import Runtime

    home = tmp_path_factory.mktemp("filters-home")
    settings = api_settings(home, answer_mode="extractive", reader_null_threshold=5.0)
    runtime = Runtime(settings)
    docs = [Document(f"scifact/{r['id']}", r["text"], r["title"], r["metadata"], r["id"]) for r in _records()]
    report = runtime.ingestor(runtime.writable_collection("default")).ingest_documents(docs)
    assert not report.errors and report.documents_added == N_DOCS
    store = KeyStore(runtime.store)
    keys = {
        "write": store.create("admin", "write")[0],
        "t1": store.create("tenant-1", "read", None, {"tenant": "t1"})[0],
        "t1-write": store.create("tenant-1-writer", "write", None, {"tenant": "t1"})[0],
    }
    runtime.store.close()
    app, uv, thread, url = start_server(settings)
    yield Server(url=url, app=app, home=home, keys=keys)
    uv.should_exit = True
    thread.join(timeout=30)


def _search(server: Server, key: str, filters: dict[str, Any] | None, k: int = 10, retriever: str = "dense") -> Any:
    with server.client(key) as client:
        body: dict[str, Any] = {"query": "cancer cells and gene expression", "k": k, "retriever": retriever}
        if filters is not None:
            body["filters"] = filters
        return client.post("/v1/search", json=body)


@pytest.mark.parametrize("retriever", ["dense", "bm25", "hybrid"])
def test_api_search_returns_k_matching_passages_for_a_range(server: Server, retriever: str) -> None:
    reply = _search(server, "write", {"where": {"year": {"$gte": 2020}, "tenant": {"$in": ["t0", "t2"]}}}, 5, retriever)
    assert reply.status_code == 200, reply.text
    passages = reply.json()["passages"]
    assert len(passages) == 5
    assert all(p["metadata"]["year"] >= 2020 and p["metadata"]["tenant"] in ("t0", "t2") for p in passages)
    assert [p["rank"] for p in passages] == [1, 2, 3, 4, 5]


def test_the_old_metadata_shorthand_is_pushed_down_too(server: Server) -> None:
    passages = _search(server, "write", {"metadata": {"tenant": "t2"}}, 15).json()["passages"]
    assert len(passages) == 15 and {p["metadata"]["tenant"] for p in passages} == {"t2"}  # 20 documents match


def test_a_full_doc_ids_list_and_odd_metadata_keys_are_answered(server: Server) -> None:
    """1000 doc_ids (the documented maximum) once made SQLite refuse the query (a 500); a
    shorthand `metadata` key named like a built-in field is a metadata key, not that field."""
    some = _search(server, "write", None, 3).json()["passages"]
    wanted = some[0]["doc_id"]
    reply = _search(server, "write", {"doc_ids": [0] * 999 + [wanted]}, 5)
    assert reply.status_code == 200, reply.text
    assert {p["doc_id"] for p in reply.json()["passages"]} == {wanted}
    with server.client("write") as client:
        chat = client.post(
            "/v1/chat/completions",
            json={"model": "default", "messages": [{"role": "user", "content": "What do cancer cells express?"}], "filters": {"doc_ids": [0] * 1000}},
        )
    assert chat.status_code == 200, chat.text
    shorthand = _search(server, "write", {"metadata": {"source": "x", "doc_id": True}})
    assert shorthand.status_code == 200 and shorthand.json()["passages"] == [], shorthand.text
    assert _search(server, "write", {"metadata": {"": 1}}).status_code == 422


@pytest.mark.parametrize(
    ("filters", "words"),
    [
        ({"where": {"tenant": {"$gt": "t1"}}}, "filters.where.tenant.$gt: $gt is a range on a string"),
        ({"where": {"year": {"$near": 3}}}, "filters.where.year.$near: unknown operator"),
        ({"where": {"operator": "AND", "conditions": []}}, "Haystack"),
        ({"where": {"year": [2020, 2021]}}, "list where a single value belongs"),
    ],
)
def test_a_bad_filter_is_a_422_naming_its_path(server: Server, filters: dict[str, Any], words: str) -> None:
    reply = _search(server, "write", filters)
    assert reply.status_code == 422, reply.text
    assert reply.json()["error"]["code"] == "invalid_filter"
    assert words in reply.json()["error"]["message"]


def test_document_listing_takes_the_same_filter(server: Server) -> None:
    with server.client("write") as client:
        reply = client.get("/v1/collections/default/documents", params={"where": json.dumps({"year": {"$lt": 2003}}), "limit": 1000})
        bad = client.get("/v1/collections/default/documents", params={"where": '{"year": {"$lt": "soon"}}'})
    assert reply.status_code == 200, reply.text
    years = sorted(d["metadata"]["year"] for d in reply.json()["documents"])
    assert years == sorted(2000 + i % 25 for i in range(N_DOCS) if 2000 + i % 25 < 2003)
    assert bad.status_code == 422 and "where.year.$lt" in bad.json()["error"]["message"]


def test_patch_changes_metadata_and_the_next_search_sees_it(server: Server) -> None:
    with server.client("write") as client:
        target = client.get("/v1/collections/default/documents", params={"limit": 1}).json()["documents"][0]
        before = _search(server, "write", {"where": {"tenant": "patched"}}).json()["passages"]
        reply = client.patch(f"/v1/collections/default/documents/{target['id']}", json={"metadata": {"tenant": "patched"}})
        assert reply.status_code == 200, reply.text
        after = _search(server, "write", {"where": {"tenant": "patched"}}).json()["passages"]
        client.patch(f"/v1/collections/default/documents/{target['id']}", json={"metadata": {"tenant": target["metadata"]["tenant"]}})
        bad = client.patch(f"/v1/collections/default/documents/{target['id']}", json={"metadata": {"tags": {"a": 1}}})
    assert before == []
    assert {p["doc_id"] for p in after} == {target["id"]}
    assert after[0]["metadata"]["year"] == target["metadata"]["year"]  # merged, not replaced
    assert bad.status_code == 422


# -- a tenant-scoped key, tried as an attacker ------------------------------------------------------
ATTACKS: list[dict[str, Any] | None] = [
    None,
    {"where": {"tenant": "t2"}},
    {"where": {"$or": [{"tenant": "t2"}, {"tenant": "t0"}, {"year": {"$gte": 0}}]}},
    {"where": {"$not": {"tenant": "t1"}}},
    {"where": {"tenant": {"$ne": "t1"}}},
    {"where": {"tenant": {"$exists": False}}},
    {"metadata": {"tenant": "t0"}},
    {"doc_ids": list(range(1, N_DOCS + 1))},
    {"where": {"doc_id": {"$in": [1, 3, 4, 6]}}},  # documents 1, 3, 4, 6 belong to t0 and t2
]


@pytest.mark.parametrize("attack", ATTACKS)
@pytest.mark.parametrize("retriever", ["dense", "hybrid"])
def test_a_tenant_key_never_sees_another_tenants_passages(server: Server, attack: dict[str, Any] | None, retriever: str) -> None:
    reply = _search(server, "t1", attack, 20, retriever)
    assert reply.status_code == 200, reply.text
    tenants = {p["metadata"]["tenant"] for p in reply.json()["passages"]}
    assert tenants <= {"t1"}, (attack, tenants)


def test_a_tenant_key_sees_its_own_passages_in_full(server: Server) -> None:
    passages = _search(server, "t1", None, 20).json()["passages"]
    assert len(passages) == 20 and {p["metadata"]["tenant"] for p in passages} == {"t1"}


def test_a_tenant_key_lists_patches_and_deletes_only_its_own_documents(server: Server) -> None:
    with server.client("write") as admin:
        everyone = admin.get("/v1/collections/default/documents", params={"limit": 1000}).json()["documents"]
    foreign = next(d for d in everyone if d["metadata"]["tenant"] == "t2")
    own = next(d for d in everyone if d["metadata"]["tenant"] == "t1")
    with server.client("t1-write") as client:
        listed = client.get("/v1/collections/default/documents", params={"limit": 1000, "where": '{"$or": [{"tenant": "t2"}, {"tenant": "t1"}]}'})
        assert {d["metadata"]["tenant"] for d in listed.json()["documents"]} == {"t1"}
        assert client.patch(f"/v1/collections/default/documents/{foreign['id']}", json={"metadata": {"x": 1}}).status_code == 404
        moved = client.patch(f"/v1/collections/default/documents/{own['id']}", json={"metadata": {"tenant": "t2"}})
        assert moved.status_code == 422, moved.text
        assert client.delete(f"/v1/collections/default/documents/{foreign['id']}").status_code == 404
    with server.client("write") as admin:
        again = admin.get("/v1/collections/default/documents", params={"limit": 1000}).json()["documents"]
    assert again == everyone  # nothing changed, nothing deleted


def test_a_tenant_key_asks_and_chats_only_over_its_own_passages(server: Server) -> None:
    foreign = _records()[2]  # tenant t2
    history = [
        {"role": "user", "content": foreign["text"][:1500]},  # another tenant's text, carried in the history
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": foreign["title"]},
    ]
    with server.client("t1") as client:
        asked = client.post("/v1/ask", json={"question": foreign["title"]})
        asked_other = client.post("/v1/ask", json={"question": foreign["title"], "filters": {"where": {"tenant": "t2"}}})
        chat = client.post("/v1/chat/completions", json={"model": "default", "messages": history})
        chat_other = client.post(
            "/v1/chat/completions",
            json={"model": "default", "messages": history, "filters": {"where": {"$or": [{"tenant": "t2"}, {"tenant": "t0"}]}}},
        )
    for reply in (asked, asked_other, chat, chat_other):
        assert reply.status_code == 200, reply.text
    assert asked.json()["passages"] and {p["metadata"]["tenant"] for p in asked.json()["passages"]} == {"t1"}
    assert asked_other.json()["passages"] == [] and not asked_other.json()["found"]  # t1 AND t2: nothing
    rag = chat.json()["rag"]
    assert rag["passages"] and {p["metadata"]["tenant"] for p in rag["passages"]} == {"t1"}
    assert {c["doc_id"] for c in chat.json()["citations"]} <= {p["doc_id"] for p in rag["passages"]}
    assert chat_other.json()["rag"]["passages"] == [] and chat_other.json()["citations"] == []


def test_the_openai_sdk_passes_filters_in_extra_body(server: Server) -> None:
    import openai  # in the dev extra: missing fails, not skips
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.keys["write"], max_retries=0, timeout=600)
    reply = client.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "What affects cancer cells?"}],
        extra_body={"filters": {"where": {"year": {"$gte": 2020}}}, "k": 4},
    )
    passages = reply.model_extra["rag"]["passages"]
    assert len(passages) == 4 and all(p["metadata"]["year"] >= 2020 for p in passages)
    with pytest.raises(openai.UnprocessableEntityError, match=r"filters\.where\.year\.\$gt: \$gt is a range on a string"):
        client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "x"}], extra_body={"filters": {"where": {"year": {"$gt": "x"}}}}
        )


# -- CLI and MCP --------------------------------------------------------------------------------------
def test_cli_search_ask_and_documents_take_where(server: Server) -> None:
    home = server.home
    found = invoke("search", "cancer cells", "--where", '{"year": {"$gte": 2020}}', "-k", "7", "--retriever", "dense", "--json", home=home)
    assert found.returncode == 0, found.stderr
    passages = json.loads(found.stdout)
    assert len(passages) == 7 and all(p["metadata"]["year"] >= 2020 for p in passages)
    short = invoke("search", "cancer cells", "--where", "tenant=t0", "--where", "year=2000", "--json", home=home)
    assert {(p["metadata"]["tenant"], p["metadata"]["year"]) for p in json.loads(short.stdout)} == {("t0", 2000)}
    bad = invoke("search", "cancer", "--where", '{"tenant": {"$lt": "t1"}}', home=home)
    assert bad.returncode == 2 and "where.tenant.$lt" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    listed = invoke("documents", "list", "--where", '{"tags": {"$contains": "odd"}}', "--json", home=home)
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == N_DOCS // 2
    asked = invoke("ask", "What affects cancer cells?", "--where", "tenant=t2", "--json", home=home)
    assert asked.returncode == 0, asked.stderr
    assert {p["metadata"]["tenant"] for p in json.loads(asked.stdout)["passages"]} == {"t2"}


def test_cli_set_metadata_and_ingest_metadata(server: Server, tmp_path: Path) -> None:
    home = server.home
    external = _records()[5]["id"]
    changed = invoke("documents", "set-metadata", external, "reviewed=true", "score=4.5", "--by", "external_id", "--json", home=home)
    assert changed.returncode == 0, changed.stderr
    assert json.loads(changed.stdout)[0]["metadata"]["reviewed"] is True
    seen = invoke("search", "anything at all", "--where", '{"reviewed": true, "score": {"$gt": 4}}', "--json", home=home)
    assert {p["external_id"] for p in json.loads(seen.stdout)} == {external}  # its passages, and no other
    note = tmp_path / "note.md"
    note.write_text("---\ntitle: Front matter\ndate: 2024-03-01\ntags: [alpha, beta]\n---\n# Ignored\n\nBody text about mitochondria.\n")
    plain = tmp_path / "plain.txt"
    plain.write_text("A plain file about ribosomes.")
    ingested = invoke("ingest", str(note), str(plain), "-c", "notes", "--metadata", "team=blue", "--metadata", "priority=2", home=home)
    assert ingested.returncode == 0, ingested.stderr
    docs = {d["title"]: d["metadata"] for d in json.loads(invoke("documents", "list", "-c", "notes", "--json", home=home).stdout)}
    assert docs["Front matter"]["date"] == "2024-03-01" and docs["Front matter"]["tags"] == ["alpha", "beta"]
    assert docs["Front matter"]["team"] == "blue" and docs["plain"]["priority"] == 2
    dated = invoke("documents", "list", "-c", "notes", "--where", '{"date": {"$gte": "2024-01-01"}, "tags": {"$contains": "beta"}}', "--json", home=home)
    assert [d["title"] for d in json.loads(dated.stdout)] == ["Front matter"]


def test_mcp_tools_take_where(server: Server) -> None:
    import os
    import shutil
    import sys

    import anyio
    from mcp import Client, StdioServerParameters

    async def talk() -> dict[str, Any]:
        rag = shutil.which("rag", path=str(Path(sys.executable).parent)) or "rag"
        env = {
            "RAG_HOME": str(server.home),
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            **({"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}),
        }
        params = StdioServerParameters(command=rag, args=["mcp"], env=env)
        async with Client(params, read_timeout_seconds=120) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            found = await client.call_tool("search", {"query": "cancer", "k": 6, "where": {"tenant": "t1", "year": {"$lt": 2010}}})
            bad = await client.call_tool("search", {"query": "cancer", "where": {"tenant": {"$gt": "t"}}})
            return {"tools": tools, "found": found, "bad": bad}

    out = anyio.run(talk)
    assert "where" in out["tools"]["search"].input_schema["properties"]
    assert "where" in out["tools"]["ask"].input_schema["properties"]
    passages = out["found"].structured_content["passages"]
    allowed = {f"scifact/{r['id']}" for i, r in enumerate(_records()) if _tenant(i) == "t1" and r["metadata"]["year"] < 2010}
    assert len(passages) == 6 and {p["source"] for p in passages} <= allowed
    assert out["bad"].is_error and "where.tenant.$gt" in out["bad"].content[0].text


def test_rag_eval_retrieval_can_be_restricted_by_a_filter(tmp_path: Path) -> None:
    folder = tmp_path / "tiny"
    (folder / "qrels").mkdir(parents=True)
    records = _records()[:8]
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as handle:
        for i, r in enumerate(records):
            handle.write(json.dumps({"_id": r["id"], "title": r["title"], "text": r["text"], "metadata": {"part": "a" if i < 4 else "b"}}) + "\n")
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": records[i]["title"]}) + "\n" for i in (5, 6)))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\t{records[i]['id']}\t1\n" for i in (5, 6)))
    home = tmp_path / "home"
    everything = invoke("eval", "retrieval", "--beir", str(folder), "--retriever", "dense", "--json", home=home)
    assert everything.returncode == 0, everything.stderr
    elsewhere = invoke("eval", "retrieval", "--beir", str(folder), "--retriever", "dense", "--where", "part=a", "--json", home=home)
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert json.loads(everything.stdout)["recall@100"] == 1.0
    restricted = json.loads(elsewhere.stdout)
    assert restricted["where"] == {"part": "a"} and restricted["recall@100"] == 0.0  # the relevant ones are in part b
