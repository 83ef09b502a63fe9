"""Bounded load test of the API on loopback: N concurrent clients for D seconds of /v1/search and
/v1/ask (extractive), printing throughput, latency percentiles and errors.

    python bench/load.py                      # search without and with micro-batching
    python bench/load.py --baseline-code /tmp/main-checkout --batch-max 0   # before/after a code change
    python bench/load.py --url http://127.0.0.1:8000 --key rag_... --collection scifact

Without --url the script starts `rag serve --no-auth` servers on the same data home (--home,
default a temporary folder; a missing collection is first ingested through the API from
--corpus): "before" (only with --baseline-code DIR: that checkout's code, e.g. `git archive` of
main, with --baseline-threads), "unbatched" (this checkout, RAG_SEARCH_BATCH_MAX=0: each request
encodes and searches alone), one per --variant (the unbatched one with some settings changed)
and "batched" (unless --batch-max 0: RAG_SEARCH_BATCH_MAX=--batch-max, concurrent searches
share one retrieval call). It also reports each server's CPU time per request
(all its processes), which the share of a busy machine the scheduler gives each server does not
distort. It loads them with /v1/search in interleaved rounds (rotating order), quotes medians and
each server's throughput ratio to the first, the load average around each run, and then measures
extractive /v1/ask on the "unbatched" server. Servers run in subprocesses, so clients and server
never share a GIL.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
SCIFACT = DATA / "beir" / "scifact"
SQUAD_DEV = DATA / "squad" / "squad-v1.1-dev-articles-01-24.json"
READER = REPO.parent / "shared" / "models" / "reader-minilm-l6-squad"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def questions(limit: int = 500) -> list[str]:
    if (SCIFACT / "queries.jsonl").exists():
        with (SCIFACT / "queries.jsonl").open() as handle:
            found = [json.loads(line)["text"] for line in handle if line.strip()]
    else:
        payload = json.loads(SQUAD_DEV.read_text())
        found = [q["question"] for a in payload["data"] for p in a["paragraphs"] for q in p["qas"]]
    random.Random(0).shuffle(found)
    return found[:limit]


def start_server(home: Path, port: int, extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    rag = shutil.which("rag", path=str(Path(sys.executable).parent)) or "rag"
    env = {
        **os.environ,
        "RAG_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "RAG_RATE_LIMIT_PER_MINUTE": "0",
        "RAG_MAX_BODY_MB": "200",
        "RAG_MAX_FILE_MB": "100",
    }
    if READER.is_dir():
        env.setdefault("RAG_READER_MODEL", str(READER))
    env.update(extra_env or {})
    return subprocess.Popen(
        [rag, "serve", "--no-auth", "--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
    )


def wait_ready(url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit("the server did not start")


def ensure_collection(client: httpx.Client, collection: str, corpus: Path) -> None:
    known = {c["collection"]: c for c in client.get("/v1/collections").raise_for_status().json()["collections"]}
    if known.get(collection, {}).get("documents"):
        return
    print(f"ingesting {corpus} into {collection!r} through the API ...", file=sys.stderr)
    started = time.perf_counter()
    response = client.post(
        f"/v1/collections/{collection}/documents", files=[("files", (corpus.name, corpus.read_bytes()))], timeout=600
    )
    response.raise_for_status()
    job = response.json()
    while job["status"] in ("queued", "running"):
        time.sleep(1)
        job = client.get(f"/v1/jobs/{job['id']}").json()
    print(f"  {job['status']}: {job['stats']} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if job["status"] == "failed":
        raise SystemExit(f"ingestion failed: {job['errors'][:3]} {job['message']}")


def run(url: str, key: str | None, collection: str, clients: int, duration: float, k: int, mix: list[str]) -> dict[str, Any]:
    qs = questions()
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    results: dict[str, list[float]] = {m: [] for m in mix}
    errors: dict[str, dict[str, int]] = {m: {} for m in mix}
    lock = threading.Lock()
    stop_at = time.monotonic() + duration

    def worker(n: int) -> None:
        rng = random.Random(n)
        with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
            i = n
            while time.monotonic() < stop_at:
                endpoint = mix[i % len(mix)]
                question = qs[rng.randrange(len(qs))]
                body: dict[str, Any] = {"collection": collection, "k": k}
                if endpoint == "search":
                    body["query"] = question
                else:
                    body.update(question=question, mode="extractive")
                began = time.perf_counter()
                try:
                    status = client.post(f"/v1/{endpoint}", json=body).status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__  # type: ignore[assignment]
                took = time.perf_counter() - began
                with lock:
                    if status == 200:
                        results[endpoint].append(took)
                    else:
                        errors[endpoint][str(status)] = errors[endpoint].get(str(status), 0) + 1
                i += 1

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    report: dict[str, Any] = {"clients": clients, "duration_s": round(elapsed, 1), "collection": collection, "k": k}
    for endpoint in mix:
        lat = sorted(results[endpoint])
        q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) >= 2 else [lat[0] * 1.0] * 99 if lat else [0.0] * 99
        report[endpoint] = {
            "ok": len(lat),
            "errors": sum(errors[endpoint].values()),
            "error_statuses": errors[endpoint],
            "throughput_rps": round(len(lat) / elapsed, 2),
            "p50_ms": round(q[49] * 1000, 1),
            "p95_ms": round(q[94] * 1000, 1),
            "p99_ms": round(q[98] * 1000, 1),
        }
    return report


def _print(label: str, report: dict[str, Any], endpoints: list[str]) -> None:
    for endpoint in endpoints:
        r = report[endpoint]
        print(
            f"  {label:<10} /v1/{endpoint:<6} {r['throughput_rps']:>7.1f} req/s  p50 {r['p50_ms']:>7.1f} ms  "
            f"p95 {r['p95_ms']:>7.1f} ms  p99 {r['p99_ms']:>7.1f} ms  ok {r['ok']}  errors {r['errors']} "
            f"{r['error_statuses'] or ''}  load {report['load_before']:.1f}->{report['load_after']:.1f}"
            + (f"  server CPU {report['server_cpu_ms_per_request']:.1f} ms/request" if "server_cpu_ms_per_request" in report else ""),
            flush=True,
        )


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its live children (uvicorn workers), all their
    threads (from /proc)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _timed_run(
    url: str, key: str | None, collection: str, args: argparse.Namespace, endpoints: list[str], pid: int | None = None
) -> dict[str, Any]:
    before = os.getloadavg()[0]
    cpu_before = _cpu_seconds(pid) if pid else 0.0
    report = run(url, key, collection, args.clients, args.duration, args.k, endpoints)
    report["load_before"], report["load_after"] = before, os.getloadavg()[0]
    if pid:
        # Server CPU per answered request: what a request costs, whatever share of a busy
        # machine the scheduler gave the server; cores / cost bounds the throughput of an idle one.
        served = sum(report[e]["ok"] for e in endpoints)
        report["server_cpu_ms_per_request"] = round((_cpu_seconds(pid) - cpu_before) * 1000 / max(served, 1), 2)
    return report


def _compare(args: argparse.Namespace, collection: str, corpus: Path) -> dict[str, Any]:
    """Before/after in one run: the same home served by each configuration, interleaved."""
    home = args.home or Path(tempfile.mkdtemp(prefix="rag-load-"))
    if not args.home:  # a home of our own: gone when the run ends
        atexit.register(shutil.rmtree, home, ignore_errors=True)

    def env(threads: int) -> dict[str, str]:
        return {"RAG_ENCODER_RUNTIME": args.encoder_runtime, **({"RAG_THREADS": str(threads)} if threads else {})}

    configs: dict[str, dict[str, str]] = {}
    if args.baseline_code:
        configs["before"] = {**env(args.baseline_threads), "RAG_SEARCH_BATCH_MAX": "0", "PYTHONPATH": str(args.baseline_code.resolve())}
    configs["unbatched"] = {**env(args.threads), "RAG_SEARCH_BATCH_MAX": "0", "PYTHONPATH": str(REPO)}
    for variant in args.variant:
        name, _, settings = variant.partition(":")
        extra = dict(pair.split("=", 1) for pair in settings.split(",") if pair)
        configs[name] = {**configs["unbatched"], **extra}
    if args.batch_max:
        configs["batched"] = {**env(args.threads), "RAG_SEARCH_BATCH_MAX": str(args.batch_max), "PYTHONPATH": str(REPO)}
    servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    try:
        for name, env in configs.items():  # one after the other: the first ingests, both export once
            port = _free_port()
            servers[name] = (start_server(home, port, env), f"http://127.0.0.1:{port}")
            wait_ready(servers[name][1], timeout=900)
            with httpx.Client(base_url=servers[name][1], timeout=60) as client:
                ensure_collection(client, collection, corpus)
        names = list(configs)
        runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
        for round_no in range(args.rounds):
            for name in names[round_no % len(names) :] + names[: round_no % len(names)]:
                report = _timed_run(servers[name][1], None, collection, args, ["search"], servers[name][0].pid)
                runs[name].append(report)
                _print(f"{name} r{round_no + 1}", report, ["search"])
        summary: dict[str, Any] = {"clients": args.clients, "duration_s": args.duration, "collection": collection,
                                   "encoder_runtime": args.encoder_runtime, "runs": runs}
        print("medians over rounds (/v1/search):")
        for name, rs in runs.items():
            med = {m: statistics.median(r["search"][m] for r in rs) for m in ("throughput_rps", "p50_ms", "p95_ms", "p99_ms")}
            errors = sum(r["search"]["errors"] for r in rs)
            cpu = statistics.median(r["server_cpu_ms_per_request"] for r in rs)
            summary[name] = {**med, "errors": errors, "server_cpu_ms_per_request": cpu}
            print(f"  {name:<10} {med['throughput_rps']:>7.1f} req/s  p50 {med['p50_ms']:>7.1f} ms  p95 {med['p95_ms']:>7.1f} ms  "
                  f"p99 {med['p99_ms']:>7.1f} ms (p99/p50 {med['p99_ms'] / max(med['p50_ms'], 1e-9):.2f})  errors {errors}  "
                  f"server CPU {cpu:.1f} ms/request (an idle {os.cpu_count()}-core machine: <= {os.cpu_count() * 1000 / max(cpu, 1e-9):.0f} req/s)")
        first = names[0]
        summary["ratios"] = {}
        for name in names[1:]:
            ratio = summary[name]["throughput_rps"] / max(summary[first]["throughput_rps"], 1e-9)
            per_round = statistics.median(
                b["search"]["throughput_rps"] / max(u["search"]["throughput_rps"], 1e-9) for b, u in zip(runs[name], runs[first])
            )
            cpu_ratio = summary[name]["server_cpu_ms_per_request"] / max(summary[first]["server_cpu_ms_per_request"], 1e-9)
            summary["ratios"][name] = {"throughput": ratio, "throughput_per_round": per_round, "server_cpu": cpu_ratio}
            print(f"ratio {name}/{first} search throughput: x{ratio:.2f} (of medians), x{per_round:.2f} (median per round); "
                  f"server CPU per request: x{cpu_ratio:.2f}")
        if "ask" in args.endpoints.split(","):
            ask = _timed_run(servers["unbatched"][1], None, collection, args, ["ask"], servers["unbatched"][0].pid)
            summary["ask"] = {**ask["ask"], "server_cpu_ms_per_request": ask["server_cpu_ms_per_request"]}
            _print("unbatched", ask, ["ask"])
        loads = [r[k] for rs in runs.values() for r in rs for k in ("load_before", "load_after")]
        print(f"load average (1 min) during the runs: median {statistics.median(loads):.1f}, "
              f"range {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores")
        return summary
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running server (measured as it is); default: start two and compare")
    parser.add_argument("--key", default=os.environ.get("RAG_API_KEY"), help="API key (env RAG_API_KEY)")
    parser.add_argument("--home", type=Path, help="data home of the started servers (default: temporary)")
    parser.add_argument("--collection", default=None, help="default: scifact, or squad-dev without SciFact")
    parser.add_argument("--corpus", type=Path, default=None, help="file to ingest when the collection is empty")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of unbatched and batched")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--endpoints", default="search,ask", help="comma-separated: search, ask")
    parser.add_argument("--encoder-runtime", default="onnx", help="RAG_ENCODER_RUNTIME of both servers")
    parser.add_argument("--threads", type=int, default=0, help="RAG_THREADS of this checkout's servers (0: all cores)")
    parser.add_argument("--batch-max", type=int, default=32, help="RAG_SEARCH_BATCH_MAX of the batched server (0: no batched server)")
    parser.add_argument("--baseline-code", type=Path, help="a checkout of the code before a change: also serve it, as 'before'")
    parser.add_argument("--baseline-threads", type=int, default=0, help="RAG_THREADS of the 'before' server (0: all cores)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:RAG_X=V,...",
                        help="one more server of this checkout: the unbatched one's settings with these RAG_* changed (repeatable)")
    parser.add_argument("--json", type=Path, help="also write the report to this file")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from indexes.encoder import cpu_summary

    print(cpu_summary() + f"; these servers run RAG_ENCODER_RUNTIME={args.encoder_runtime}", flush=True)
    corpus = args.corpus or (SCIFACT / "corpus.jsonl" if (SCIFACT / "corpus.jsonl").exists() else SQUAD_DEV)
    collection = args.collection or ("scifact" if corpus.parent == SCIFACT else "squad-dev")
    if args.url is None:
        report = _compare(args, collection, corpus)
    else:
        wait_ready(args.url)
        endpoints = args.endpoints.split(",")
        report = _timed_run(args.url, args.key, collection, args, endpoints)
        print(f"{report['clients']} clients, {report['duration_s']} s, collection {report['collection']}, k={report['k']}")
        _print(args.url, report, endpoints)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
