"""Deployment files, run as far as possible without a Docker engine: the Dockerfile is parsed into
its instructions and the compose file loaded; the image's own install check is run, and the
container's command is started with the image's and compose's environment (against a real
PostgreSQL, as compose wires it) until the image's and compose's health checks pass."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml  # the dev extra: missing, the suite fails

REPO = Path(__file__).resolve().parents[1]


def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments): continuations joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    return [(s.split(None, 1)[0].upper(), s.split(None, 1)[1].strip() if " " in s.strip() else "") for s in logical]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for op, args in instructions():
        if op == "ENV":
            for pair in shlex.split(args):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_image_installs_cpu_torch_before_the_project_and_copies_only_what_exists() -> None:
    ops = instructions()
    assert ops[0] == ("FROM", "python:3.11-slim")
    runs = [args for op, args in ops if op == "RUN"]
    torch_step = next(i for i, r in enumerate(runs) if '"torch==' in r)
    project_step = next(i for i, r in enumerate(runs) if re.search(r'pip install --no-cache-dir "\.\[', r))
    assert torch_step < project_step and "--index-url" in runs[torch_step]
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", "\n".join(f"{o} {a}" for o, a in ops), re.MULTILINE))
    assert args["TORCH_INDEX_URL"].endswith("/whl/cpu")
    for op, arguments in ops:
        if op == "COPY":
            *sources, _ = arguments.split()
            for source in sources:
                assert list(REPO.glob(source)), f"COPY {source}: nothing matches"
    # What the image installs is every package the code it copies imports at serve time.
    extras = re.search(r'"\.\[([a-z,]+)\]"', runs[project_step])
    assert extras and {"api", "postgres"} <= set(extras.group(1).split(","))
    assert dict(ops).get("USER") == "rag"


def test_the_images_install_check_passes_with_the_project() -> None:
    """The `python -c` the image runs after installing (imports and the pinned torch)."""
    check = next(args for op, args in instructions() if op == "RUN" and "python -c" in args)
    code = shlex.split(check[check.index("python -c") :])[2]
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def test_compose_runs_the_api_against_postgres_15_with_volumes_and_health_checks() -> None:
    spec = compose()
    api, db = spec["services"]["api"], spec["services"]["db"]
    assert db["image"] == "postgres:15"
    url = api["environment"]["RAG_DATABASE_URL"]
    assert url.startswith("postgresql+psycopg://") and "@db:5432/" in url
    assert api["depends_on"]["db"]["condition"] == "service_healthy"
    assert any(v.endswith(":/data") for v in api["volumes"]) and api["environment"]["RAG_HOME"] == "/data"
    assert any("/var/lib/postgresql/data" in v for v in db["volumes"])
    assert {"rag-data", "pg-data"} <= set(spec["volumes"])
    assert all(p.startswith("127.0.0.1:") for p in api["ports"])  # published on loopback only
    assert "command" not in api  # the image's CMD runs


def test_compose_has_an_optional_llm_profile_with_an_openai_compatible_llama_cpp_server() -> None:
    spec = compose()
    llm = spec["services"]["llm"]
    assert llm["profiles"] == ["llm"]
    assert "llama.cpp" in llm["image"] and "server" in llm["image"]
    assert llm["command"][llm["command"].index("--port") + 1] == "8080"
    assert spec["services"]["api"]["environment"]["RAG_OPENAI_BASE_URL"] == "http://llm:8080/v1"
    assert "profiles" not in spec["services"]["api"] and "profiles" not in spec["services"]["db"]


def test_settings_used_by_the_image_and_compose_exist() -> None:
    from rag.settings import Settings

    fields = set(Settings.model_fields)
    for name in [*image_env(), *compose()["services"]["api"]["environment"]]:
        if name.startswith("RAG_"):
            assert name[4:].lower() in fields, f"{name} is not a setting"


def test_the_containers_command_starts_and_both_health_checks_pass(tmp_path: Path, postgres_url: str) -> None:
    """CMD with the image's ENV and compose's environment, the volumes mapped to folders here and
    `db` to a real PostgreSQL; then the image's HEALTHCHECK URL and compose's /readyz answer 200."""
    ops = instructions()
    cmd = json.loads(dict(ops)["CMD"])
    healthcheck = dict(ops)["HEALTHCHECK"]
    env = {**os.environ, **image_env()}
    for name, value in compose()["services"]["api"]["environment"].items():
        env[name] = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value))  # compose's defaults
    assert env["RAG_DATABASE_URL"].startswith("postgresql+psycopg://") and env["RAG_HOME"] == "/data"
    # The reader ships inside the package (rag/shipped_models/, copied with `COPY rag`): neither the
    # image nor compose names one, so the command below loads the shipped reader.
    assert "RAG_READER_MODEL" not in image_env() and "RAG_READER_MODEL" not in compose()["services"]["api"]["environment"]
    env.pop("RAG_READER_MODEL", None)  # nothing from this shell either
    port = _free_port()
    env.update(
        RAG_DATABASE_URL=postgres_url,  # the `db` service
        RAG_HOME=str(tmp_path / "data"),  # the rag-data volume
        RAG_API_HOST="127.0.0.1",  # the container's 0.0.0.0, kept on loopback here
        RAG_API_PORT=str(port),
    )
    executable = shutil.which(cmd[0], path=str(Path(sys.executable).parent))
    assert executable, f"CMD {cmd[0]!r} is not installed by the project"
    process = subprocess.Popen([executable, *cmd[1:]], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        check_url = re.search(r'curl -fsS "([^"]+)"', healthcheck)
        assert check_url, healthcheck
        image_url = check_url.group(1).replace("${RAG_API_PORT}", str(port))
        compose_url = compose()["services"]["api"]["healthcheck"]["test"][-1].replace(":8000", f":{port}")
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, process.communicate()[1]
            try:
                if httpx.get(image_url, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the container's command did not become healthy in 180 s"
            time.sleep(0.5)
        while httpx.get(compose_url, timeout=5).status_code != 200:  # readiness: models loaded
            assert process.poll() is None and time.monotonic() < deadline + 120, "never ready"
            time.sleep(0.5)
        # Keys are required, as compose's comment promises (`rag keys create`).
        assert httpx.get(f"http://127.0.0.1:{port}/v1/collections", timeout=5).status_code == 401
    finally:
        process.terminate()
        process.wait(timeout=30)
