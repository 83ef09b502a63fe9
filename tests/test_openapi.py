"""The OpenAPI document is true: schemathesis, with every check, against a real server.

A real server on loopback (uvicorn, SQLite, the embedder and the no-answer reader from disk) with a
real collection; schemathesis generates requests from `/openapi.json` (examples, coverage of the
boundaries, fuzzing) and checks each response: status documented, body matching its schema,
content type documented, schema-valid requests accepted, schema-invalid ones rejected, no 5xx.
Sized for CI: a few hundred cases with a fixed seed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig

from tests.test_api import CORPUS, api_settings, start_server, upload, wait_job

NA_READER = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "reader-minilm-l6-squad-na"
EXAMPLES_PER_OPERATION = 25


@pytest.fixture(scope="module")
def st_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    from api.keys import KeyStore
    from indexes.store import Store

    home = tmp_path_factory.mktemp("openapi-home")
    config = api_settings(
        home,
        collection="docs",
        reader_model=str(NA_READER),
        generator_max_tokens=8,
        generation_timeout_s=60,
        max_json_documents=50,
    )
    key = KeyStore(Store(home, config.sql_url)).create("schemathesis", "write")[0]
    app, uv, thread, url = start_server(config)
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120) as client:
        corpus = [(p.name, p.read_bytes()) for p in sorted(CORPUS.iterdir())]
        assert wait_job(client, upload(client, "docs", corpus))["status"] == "succeeded"
    yield url, key
    uv.should_exit = True
    thread.join(timeout=30)


@pytest.fixture(scope="module")
def api_schema(st_server: tuple[str, str]) -> Any:
    url, key = st_server
    config = SchemathesisConfig.from_dict(
        {
            "seed": 20261123,
            "headers": {"Authorization": f"Bearer {key}"},
            "generation": {"max-examples": EXAMPLES_PER_OPERATION},
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
    for event in engine.from_schema(api_schema).execute():
        if isinstance(event, events.ScenarioFinished):
            cases += len(event.recorder.cases)
            for case_id, nodes in event.recorder.checks.items():
                case = event.recorder.cases[case_id].value
                for node in nodes:
                    if node.status == Status.FAILURE and node.failure_info is not None:
                        failure = node.failure_info.failure
                        failures.append(
                            f"{case.method} {case.formatted_path} ({event.phase}): {node.name}: {failure.title}: {failure.message[:300]}"
                        )
            if event.status == Status.ERROR:
                failures.append(f"{event.label}: error in the {event.phase} phase")
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
