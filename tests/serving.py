"""`rag serve` in its own process, as deployed: for tests that watch the server's memory or must
not share an interpreter with the client (schemathesis compiles code in threads)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx


@dataclass
class Served:
    url: str
    key: str
    process: subprocess.Popen[bytes]

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=120, **kwargs)

    def peak_rss_mib(self) -> float:
        """The server's peak resident memory so far (VmHWM), in MiB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmHWM in /proc/PID/status")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def served(home: Path, **settings: Any) -> Iterator[Served]:
    """A server on loopback over `home` with a write key; `settings` become RAG_* variables."""
    from api.keys import KeyStore
    from indexes.store import Store
    from rag.settings import Settings

    env = {
        **os.environ,
        "RAG_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        **{f"RAG_{name.upper()}": str(value) for name, value in settings.items()},
    }
    sql_url = Settings(home=home).sql_url
    key = KeyStore(Store(home, sql_url)).create("tests", "write")[0]
    port = _free_port()
    rag = shutil.which("rag", path=str(Path(sys.executable).parent)) or "rag"
    # stderr goes to a file, never a pipe nobody drains: a server logging more than a pipe holds
    # (tracebacks of 500s under schemathesis) blocked in write() and stopped answering
    log = tempfile.TemporaryFile()
    process = subprocess.Popen([rag, "serve", "--port", str(port), "--log-level", "warning"], env=env, stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"rag serve exited: {log.read().decode(errors='replace')}")
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("rag serve did not start in 180 s")
            time.sleep(0.25)
        yield Served(url, key, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def wait_job(client: httpx.Client, job: dict[str, Any], timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while job["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, f"job did not finish: {job}"
        time.sleep(0.1)
        job = client.get(f"/v1/jobs/{job['id']}").json()
    return job


def sse_events(response: httpx.Response) -> list[tuple[str, Any]]:
    """The (event, data) pairs of a text/event-stream response, read as they arrive."""
    import json

    events: list[tuple[str, Any]] = []
    event = None
    for line in response.iter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            events.append((event or "message", json.loads(line[6:])))
    return events
