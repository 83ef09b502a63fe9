"""Shared fixtures: real models from disk, real SQLite, a throwaway PostgreSQL server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATA = SHARED / "data"
READER_MODEL = SHARED / "models" / "reader-minilm-l6-squad"  # SQuAD 1.1, no no-answer head: the 4.57 parity golden file
NA_READER_MODEL = SHARED / "models" / "reader-minilm-l6-squad-na"  # stronger, abstains: tests that need a good reader
SUPPORT_MODEL = SHARED / "models" / "verifier-minilm-l6-support"
SCIFACT = DATA / "beir" / "scifact"
SQUAD_DEV = DATA / "squad" / "squad-v1.1-dev-articles-01-24.json"
_GRAPH_CACHE = pytest.StashKey[str]()
CHROMIUM = Path("/usr/bin/chromium")  # Debian's, never a downloaded browser
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def pytest_configure(config: pytest.Config) -> None:
    """The encoder graph (OpenVINO/ONNX, RAG_ENCODER_RUNTIME=auto) is exported once per test
    session into one folder shared by every data home the tests make, CLI and server
    subprocesses included (they inherit the variable); removed when the session ends."""
    if "RAG_GRAPH_CACHE" not in os.environ:
        folder = tempfile.mkdtemp(prefix="rag-test-graphs-")
        os.environ["RAG_GRAPH_CACHE"] = folder
        config.stash[_GRAPH_CACHE] = folder


def _needs_shared(longrepr: object) -> str | None:
    """Where ../shared is absent, the reason to skip a failure that came from reading it."""
    text = str(longrepr)
    if SHARED.is_dir() or str(SHARED) not in text:
        return None
    return f"needs {SHARED} (evaluation data and reference checkpoints), which is not beside this checkout"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    """A test module that reads ../shared when imported is reported as skipped, saying so."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    reason = _needs_shared(report.longrepr) if report.failed else None
    if reason:
        report.outcome, report.longrepr = "skipped", (str(collector.path), 0, f"Skipped: {reason}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A test (or fixture) that failed reading ../shared where it is absent is a skip, saying so;
    with ../shared present nothing changes."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    reason = _needs_shared(report.longrepr) if report.failed else None
    if reason:
        report.outcome, report.longrepr = "skipped", (str(item.path), item.location[1] or 0, f"Skipped: {reason}")


def pytest_unconfigure(config: pytest.Config) -> None:
    folder = config.stash.get(_GRAPH_CACHE, None)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
        os.environ.pop("RAG_GRAPH_CACHE", None)


@pytest.fixture(scope="session")
def encoder(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The embedded default embedder (all-MiniLM-L6-v2 from its PyPI package) on the reference
    runtime (torch fp32), loaded once for the session (a Runtime a test builds loads its own)."""
    from indexes.encoder import DEFAULT_EMBEDDER, EncoderSpec
    from rag.runtime import Runtime
    from rag.settings import Settings

    reference = Runtime(Settings(home=tmp_path_factory.mktemp("reference-home"), encoder_runtime="torch"))
    return reference.encoder(EncoderSpec.detect(DEFAULT_EMBEDDER))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium driven by Playwright: the web page and report tests."""
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is absent (apt-get install -y chromium; scripts/bootstrap does it as root)")
    from playwright import sync_api  # the dev extra: missing, the suite fails
    with sync_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


@pytest.fixture()
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'rag.db'}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL cluster started with initdb/pg_ctl for this test session, on loopback."""
    if not shutil.which("initdb") or not shutil.which("pg_ctl"):
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    folder = Path(tempfile.mkdtemp(prefix="rag-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(folder, "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    data = folder / "data"
    subprocess.run(
        [*run_as, "initdb", "-D", str(data), "-A", "trust", "-U", "rag", "--no-sync"],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
    subprocess.run(
        [*run_as, "pg_ctl", "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql+psycopg://rag@127.0.0.1:{port}"
    finally:
        subprocess.run([*run_as, "pg_ctl", "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture()
def postgres_url(postgres_server: str) -> str:
    """A fresh database on the session's server for each test."""
    import uuid

    from sqlalchemy import create_engine, text

    name = "t_" + uuid.uuid4().hex[:12]
    admin = create_engine(f"{postgres_server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return f"{postgres_server}/{name}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each store test runs against SQLite and against a real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'rag.db'}"
    return str(request.getfixturevalue("postgres_url"))


def invoke(*args: str, home: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `cli.main.main` in this process (models stay loaded) with its own argv, environment
    and captured output; returns what a subprocess would."""
    import contextlib
    import io

    from cli.main import main

    environment = {"RAG_HOME": str(home), **(env or {})}
    saved_env = {key: os.environ.get(key) for key in environment}
    saved_argv = sys.argv
    out, err = io.StringIO(), io.StringIO()
    code = 0
    os.environ.update(environment)
    sys.argv = ["rag", *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        sys.argv = saved_argv
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return subprocess.CompletedProcess(["rag", *args], code, out.getvalue(), err.getvalue())


def run_cli_importing_none_of(modules: set[str], *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `rag ARGS` in a fresh interpreter; it exits non-zero, naming them, if the command
    imported any of `modules` (a lazy import that stopped being lazy)."""
    code = (
        "import sys\nfrom cli.main import main\nforbidden = set(sys.argv[1].split(','))\nsys.argv = ['rag', *sys.argv[2:]]\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        "assert not forbidden & set(sys.modules), f'imported {sorted(forbidden & set(sys.modules))}'\n"
    )
    return subprocess.run([sys.executable, "-c", code, ",".join(sorted(modules)), *args], cwd=REPO, env=env, capture_output=True, text=True)


def run_cli(*args: str, home: Path, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the installed `rag` command in a subprocess, as a user would."""
    environment = {**os.environ, "RAG_HOME": str(home), "HF_HUB_OFFLINE": "1", **(env or {})}
    rag = shutil.which("rag", path=str(Path(sys.executable).parent)) or "rag"
    return subprocess.run([rag, *args], capture_output=True, text=True, env=environment, timeout=timeout)
