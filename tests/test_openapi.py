"""The OpenAPI document is true: schemathesis, with every check, against a real server.

A real server on loopback (uvicorn, SQLite, the embedder and the no-answer reader from disk) with a
real collection; schemathesis generates requests from `/openapi.json` (examples, coverage of the
boundaries, fuzzing) and checks each response: status documented, body matching its schema,
content type documented, schema-valid requests accepted, schema-invalid ones rejected, no 5xx.
Sized for CI: a few hundred cases with a fixed seed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig

from tests.serving import served, wait_job

CORPUS = Path(__file__).resolve().parents[1] / "examples" / "corpus"
EXAMPLES_PER_OPERATION = 6


@pytest.fixture(scope="module")
def st_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    settings = {
        "collection": "docs",
        "generator_max_tokens": 8,
        "max_file_mb": 1,
        "max_body_mb": 3,
        "max_upload_files": 8,
        "max_json_documents": 50,
        "rate_limit_per_minute": 0,
        "batch_chunks": 16,
    }
    with served(tmp_path_factory.mktemp("openapi-home"), **settings) as server, server.client() as client:
        corpus = [("files", (p.name, p.read_bytes())) for p in sorted(CORPUS.iterdir())]
        job = client.post("/v1/collections/docs/documents", files=corpus).json()
        assert wait_job(client, job)["status"] == "succeeded"
        yield server.url, server.key


@pytest.fixture(scope="module")
def api_schema(st_server: tuple[str, str]) -> Any:
    url, key = st_server
    config = SchemathesisConfig.from_dict(
        {
            "seed": 20261123,
            "headers": {"Authorization": f"Bearer {key}"},
            "request-timeout": 120,
            "generation": {"max-examples": EXAMPLES_PER_OPERATION},
            # Links come from the document and from Location headers; the naming heuristic would
            # take the job id an upload returns for a document id.
            # A chat whose last message is not the user's question is refused (422): JSON Schema
            # cannot say "the last item of an array", so the schema allows it.
            "operations": [
                {
                    "include-path": "/v1/chat/completions",
                    "checks": {
                        "positive_data_acceptance": {"expected-statuses": ["2xx", "401", "403", "404", "409", "422", "429"]}
                    },
                }
            ],
            "phases": {"stateful": {"max-steps": 10, "inference": {"algorithms": ["location-headers"]}}},
            # 413 is how this API refuses a request over a documented limit (maxItems of files
            # or documents): a rejection like 422.
            "checks": {
                "negative_data_rejection": {
                    "expected-statuses": ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]
                },
                "positive_data_acceptance": {"expected-statuses": ["2xx", "401", "403", "404", "409", "429"]},
            },
        }
    )
    return schemathesis.openapi.from_url(f"{url}/openapi.json", config=config)


def test_every_response_matches_the_openapi_document(api_schema: Any) -> None:
    """All phases (examples, coverage, fuzzing, stateful), all checks; every failure listed.

    The engine is driven from Python rather than through `schema.parametrize()`, whose lazy
    fixture loader does not run under pytest 9."""
    from schemathesis import engine
    from schemathesis.engine import Status, events

    failures: list[str] = []
    cases = 0
    started = time.perf_counter()
    for event in engine.from_schema(api_schema).execute():
        if isinstance(event, events.ScenarioFinished):
            cases += len(event.recorder.cases)
            for case_id, nodes in event.recorder.checks.items():
                case = event.recorder.cases[case_id].value
                for node in nodes:
                    if node.status == Status.FAILURE and node.failure_info is not None:
                        failure = node.failure_info.failure
                        interaction = event.recorder.interactions.get(case_id)
                        response = interaction.response if interaction else None
                        answered = f" -> {response.status_code} {response.content[:300]!r}" if response else ""
                        failures.append(
                            f"{case.method} {case.formatted_path} ({event.phase}): {node.name}: {failure.title}: "
                            f"{failure.message[:300]}; sent {case.body!r:.300}{answered}"
                        )
            if event.status == Status.ERROR:
                failures.append(f"{event.label}: error in the {event.phase} phase")
        elif isinstance(event, events.PhaseFinished):
            print(f"{event.phase.name}: {event.status} at {time.perf_counter() - started:.0f} s, {cases} cases")
        elif isinstance(event, (events.NonFatalError, events.FatalError)):
            failures.append(f"schemathesis error: {event.info.format()}")
    assert cases >= 200, f"only {cases} cases ran"
    assert not failures, "\n".join(sorted(set(failures)))


def test_the_document_has_no_dangling_references(api_schema: Any, st_server: tuple[str, str]) -> None:
    import json

    url, _ = st_server
    document = httpx.get(f"{url}/openapi.json").json()
    text = json.dumps(document)
    names = set(document["components"]["schemas"])
    refs = {part.split('"')[0] for part in text.split('"$ref": "#/components/schemas/')[1:]}
    assert refs <= names, refs - names
    upload_op = document["paths"]["/v1/collections/{name}/documents"]["post"]
    assert {"400", "401", "403", "413", "422", "429"} <= set(upload_op["responses"])
    assert "text/plain" in document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]


def test_every_bound_in_the_document_is_a_json_schema_keyword(st_server: tuple[str, str]) -> None:
    """Found by the fuzzer (a run of test_every_response_matches_the_openapi_document): `doc_ids`'
    items carried pydantic's `ge`/`le` instead of `minimum`/`maximum` (a bound after a
    BeforeValidator is not translated), so a client or fuzzer reading the document could send
    2**64 in `filters.doc_ids` and get a 422 for a request the document allowed. The bound is
    JSON's largest exact integer: 2**63 - 1 reads as the float 2**63 in a JSON Schema validator."""
    url, _ = st_server
    document = httpx.get(f"{url}/openapi.json").json()
    misnamed: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if node.get("type") in ("integer", "number") and set(node) & {"ge", "le", "gt", "lt"}:
                misnamed.append(path)
            for key, value in node.items():
                walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")

    walk(document, "")
    assert not misnamed, misnamed
    items = document["components"]["schemas"]["Filters"]["properties"]["doc_ids"]["anyOf"][0]["items"]
    assert (items["minimum"], items["maximum"]) == (-(2**53 - 1), 2**53 - 1)
