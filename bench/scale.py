"""Scale: streaming ingest single-process vs. Ray at growing sizes, and an on-disk IVF at 1M vectors.

Ingest: SciFact abstracts repeated with distinct ids (JSONL files of 200 records) until each size
in passages is reached; every run is `rag ingest` in its own subprocess, once in-process and once
with `--ray-address` against a `ray start --head` cluster on loopback started here. Reported:
passages/s, and peak RSS sampled from /proc (the `rag` process, plus for Ray the worker processes
of the run). Flat passages/s and flat RSS across sizes is the streaming claim; the Ray/single
throughput ratio is the overhead of Ray on one machine.

On-disk IVF: synthetic vectors (a mixture of Gaussians on the sphere, as bench/query.py) written
shard by shard as on-disk segments (`indexes.ondisk.OnDiskIndex`: the first shard trains the IVF,
each further shard is filled into a copy of it, as a collection's write batches are), merged list
by list into one segment on disk, then searched memory-mapped in a fresh process: RSS while searching against the size of a Flat index, recall@10 against exact
search (computed shard by shard), p50 latency.

    python bench/scale.py [--sizes 10000,20000,40000] [--modes single,ray] [--ivf 1000000]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SCIFACT = REPO.parent / "shared" / "data" / "beir" / "scifact" / "corpus.jsonl"
sys.path.insert(0, str(REPO))
PASSAGES_PER_RECORD = 11_463 / 5_183  # SciFact with 200-token chunks (README, retrieval section)


# -- measuring --------------------------------------------------------------------------------
def _rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident MB from /proc: VmRSS (all), RssAnon (the process's own memory) or RssFile
    (file pages mapped in, e.g. a memory-mapped index: page cache the kernel can drop)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _ray_worker_pids() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"MapWorker" in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _run_sampled(cmd: list[str], env: dict[str, str], with_ray_workers: bool) -> tuple[str, float, float]:
    """Run `cmd`; return its stdout, wall seconds and peak RSS (MB) of it plus Ray workers."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0.0
    while proc.poll() is None:
        total = _rss_mb(proc.pid) + (sum(_rss_mb(p) for p in _ray_worker_pids()) if with_ray_workers else 0.0)
        peak = max(peak, total)
        time.sleep(0.25)
    out, err = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed: {err[-2000:]}")
    return out, time.perf_counter() - started, peak


# -- ingest -----------------------------------------------------------------------------------
def make_corpus(folder: Path, passages: int, per_file: int = 200) -> int:
    """SciFact records cycled with distinct ids into JSONL files; returns the record count."""
    records = int(np.ceil(passages / PASSAGES_PER_RECORD))
    folder.mkdir(parents=True, exist_ok=True)
    source = [json.loads(line) for line in SCIFACT.open(encoding="utf-8")]
    rows = ({**r, "_id": f"{r['_id']}-{i // len(source)}"} for i, r in zip(range(records), itertools.cycle(source)))
    for n in itertools.count():
        batch = list(itertools.islice(rows, per_file))
        if not batch:
            break
        (folder / f"part-{n:05d}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in batch), encoding="utf-8")
    return records


def start_head(cpus: int) -> tuple[subprocess.Popen[bytes], str, dict[str, str], Path]:
    """`ray start --head` on loopback with its own auth token; stop it with stop_head."""
    temp = Path(tempfile.mkdtemp(prefix="rs-", dir="/tmp"))
    (temp / "token").write_text(secrets.token_hex(32), encoding="utf-8")
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(temp / "token")}
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    head = subprocess.Popen(
        [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--num-cpus", str(cpus), "--num-gpus", "0",
         "--node-ip-address", "127.0.0.1", "--port", str(port), "--include-dashboard", "false",
         "--disable-usage-stats", "--temp-dir", str(temp)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    address = f"127.0.0.1:{port}"
    probe = f"import ray; ray.init(address={address!r}, log_to_driver=False); ray.shutdown()"
    deadline = time.monotonic() + 120
    while subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True).returncode:
        if time.monotonic() > deadline:
            stop_head(head)
            raise RuntimeError("the Ray head node did not come up")
        time.sleep(2)
    return head, address, env, temp


def _descendants(root: int) -> list[int]:
    """Every process below `root` (Ray workers start their own sessions, so a process group
    does not hold them all)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found.extend(children)
        frontier.extend(children)
    return found


def stop_head(head: subprocess.Popen[bytes]) -> None:
    """Stop the head node started by start_head and every process it started."""
    tree = [head.pid, *_descendants(head.pid)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in tree:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(3)
    head.wait(timeout=30)


def bench_ingest(sizes: list[int], modes: list[str], work: Path, cpus: int) -> list[dict[str, Any]]:
    results = []
    head = None
    env = dict(os.environ)
    address = ""
    if "ray" in modes:
        head, address, env, _ = start_head(cpus)
    env.update(PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    try:
        for size in sizes:
            corpus = work / f"corpus-{size}"
            records = make_corpus(corpus, size)
            for mode in modes:
                home = work / f"home-{mode}-{size}"
                cmd = [sys.executable, "-m", "cli", "--home", str(home), "ingest", str(corpus), "-c", "bench", "--json"]
                if mode == "ray":
                    cmd += ["--ray-address", address]
                out, wall, peak = _run_sampled(cmd, env, with_ray_workers=mode == "ray")
                report = json.loads(out)
                row = {
                    "mode": mode,
                    "records": records,
                    "passages": report["chunks_added"],
                    "wall_s": round(wall, 1),  # with interpreter start and model load
                    "ingest_s": round(report["seconds"], 1),  # the run itself (Ray: with actor start-up)
                    "passages_per_s": round(report["chunks_added"] / report["seconds"], 2),
                    "peak_rss_mb": round(peak),
                }
                results.append(row)
                print(json.dumps(row), flush=True)
    finally:
        if head is not None:
            stop_head(head)
    return results


# -- on-disk IVF ------------------------------------------------------------------------------
def _shards(n: int, shard: int, dim: int = 384, clusters: int = 2000):  # type: ignore[no-untyped-def]
    """Deterministic synthetic vectors, shard by shard (never all in memory)."""
    centres = np.random.default_rng(0).standard_normal((clusters, dim)).astype(np.float32)
    for number, start in enumerate(range(0, n, shard)):
        rng = np.random.default_rng(1 + number)
        count = min(shard, n - start)
        out = centres[rng.integers(0, clusters, count)] + 0.6 * rng.standard_normal((count, dim)).astype(np.float32)
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        yield np.arange(start, start + count, dtype=np.int64), out


def _queries(count: int, dim: int = 384, clusters: int = 2000) -> np.ndarray:
    centres = np.random.default_rng(0).standard_normal((clusters, dim)).astype(np.float32)
    rng = np.random.default_rng(10**6)
    out = centres[rng.integers(0, clusters, count)] + 0.6 * rng.standard_normal((count, dim)).astype(np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def child_build(folder: Path, n: int, shard: int, factory: str) -> None:
    """As an on-disk collection grows: the first shard trains the IVF and becomes a segment, each
    further shard becomes a segment with the same quantizer, then all are merged list by list."""
    from indexes.ondisk import OnDiskIndex, data_file, write_lists

    started = time.perf_counter()
    segments: list[OnDiskIndex] = []
    for number, (ids, vectors) in enumerate(_shards(n, shard)):
        index = OnDiskIndex.like(segments[0]) if segments else OnDiskIndex(384, f"OnDisk,{factory}")
        index.add(ids, vectors)  # the first shard trains the IVF (on a sample of it)
        index.save(folder / f"seg-{number:06d}.faiss")
        segments.append(index)
    built = time.perf_counter()
    count = write_lists(folder / "merged.faiss", segments[0], [(s, None) for s in segments])
    merged = time.perf_counter()
    for segment in segments:
        assert segment.path is not None
        data_file(segment.path).unlink()
        segment.path.unlink()
    data = data_file(folder / "merged.faiss").stat().st_size
    print(json.dumps({"build_s": merged - started, "segments_s": built - started, "merge_s": merged - built, "count": count, "data_bytes": data}))


def child_search(folder: Path, n: int, shard: int, factory: str, nprobe: int, queries: int) -> None:
    from indexes.config import SearchParams
    from indexes.ondisk import OnDiskIndex

    q = _queries(queries)
    before = _rss_mb(os.getpid())
    index = OnDiskIndex.load(folder / "merged.faiss", f"OnDisk,{factory}")
    params = SearchParams(nprobe=nprobe)
    latencies, found = [], []
    for row in q:
        t = time.perf_counter()
        _, ids = index.search(row, 10, params)
        latencies.append((time.perf_counter() - t) * 1000)
        found.append(ids[0])
    rss_searching = {f: _rss_mb(os.getpid(), f) for f in ("VmRSS", "RssAnon", "RssFile")}
    # Exact top-10, shard by shard (a Flat index of all n would not fit the point of this bench).
    best_scores = np.full((queries, 10), -np.inf, dtype=np.float32)
    best_ids = np.zeros((queries, 10), dtype=np.int64)
    for ids, vectors in _shards(n, shard):
        scores = q @ vectors.T
        both_s = np.hstack([best_scores, scores])
        both_i = np.hstack([best_ids, np.broadcast_to(ids, scores.shape)])
        top = np.argsort(-both_s, axis=1)[:, :10]
        best_scores, best_ids = np.take_along_axis(both_s, top, 1), np.take_along_axis(both_i, top, 1)
    recall = float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, best_ids)]))
    print(json.dumps({
        "rss_before_open_mb": before, "rss_searching_mb": rss_searching["VmRSS"],
        "anon_searching_mb": rss_searching["RssAnon"], "file_searching_mb": rss_searching["RssFile"],
        "p50_ms": float(np.median(latencies)), "p99_ms": float(np.percentile(latencies, 99)), "recall_at_10": recall,
    }))


def bench_ivf(n: int, shard: int, factory: str, nprobe: int, queries: int, work: Path) -> dict[str, Any]:
    folder = work / "ivf"
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    me = [sys.executable, str(Path(__file__).resolve())]
    common = ["--ivf", str(n), "--shard", str(shard), "--ivf-factory", factory, "--dir", str(folder)]
    out, _, build_peak = _run_sampled([*me, "--child", "build", *common], env, with_ray_workers=False)
    built = json.loads(out)
    out, _, _ = _run_sampled([*me, "--child", "search", *common, "--nprobe", str(nprobe), "--queries", str(queries)], env, False)
    searched = json.loads(out)
    flat_mb = n * 384 * 4 / 2**20
    row = {
        "vectors": n,
        "factory": f"OnDisk,{factory}",
        "nprobe": nprobe,
        "build_s": round(built["build_s"], 1),
        "segments_s": round(built["segments_s"], 1),
        "merge_s": round(built["merge_s"], 1),
        "build_peak_rss_mb": round(build_peak),
        "data_mb": round(built["data_bytes"] / 2**20, 1),
        "flat_index_mb": round(flat_mb, 1),
        "rss_searching_mb": round(searched["rss_searching_mb"]),
        "rss_searching_vs_flat": round(searched["rss_searching_mb"] / flat_mb, 3),
        "anon_searching_mb": round(searched["anon_searching_mb"]),
        "mapped_index_pages_mb": round(searched["file_searching_mb"]),
        "interpreter_rss_mb": round(searched["rss_before_open_mb"]),
        "recall_at_10": round(searched["recall_at_10"], 3),
        "p50_ms": round(searched["p50_ms"], 2),
        "p99_ms": round(searched["p99_ms"], 2),
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,20000,40000", help="passages per ingest run ('' to skip)")
    parser.add_argument("--modes", default="single,ray")
    parser.add_argument("--ray-cpus", type=int, default=2, help="CPUs of the loopback Ray head node")
    parser.add_argument("--ivf", type=int, default=1_000_000, help="synthetic vectors for the on-disk IVF (0 to skip)")
    parser.add_argument("--shard", type=int, default=100_000, help="vectors per write batch (shard)")
    parser.add_argument("--ivf-factory", default="IVF1024,SQ8")
    parser.add_argument("--nprobe", type=int, default=16)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--dir", help="work folder (default: a temporary one)")
    parser.add_argument("--child", choices=["build", "search"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = Path(args.dir or tempfile.mkdtemp(prefix="rag-scale-"))
    if args.child == "build":
        child_build(work, args.ivf, args.shard, args.ivf_factory)
        return
    if args.child == "search":
        child_search(work, args.ivf, args.shard, args.ivf_factory, args.nprobe, args.queries)
        return
    print(f"load average at start: {os.getloadavg()}", flush=True)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    rows = bench_ingest(sizes, args.modes.split(","), work, args.ray_cpus) if sizes else []
    by = {(r["mode"], r["records"]): r for r in rows}
    for (mode, records), row in by.items():
        if mode == "ray" and ("single", records) in by:
            single = by[("single", records)]
            print(f"{row['passages']} passages: Ray/single throughput x{row['passages_per_s'] / single['passages_per_s']:.2f}, "
                  f"peak RSS Ray (driver + workers) {row['peak_rss_mb']} MB vs single {single['peak_rss_mb']} MB")
    if args.ivf:
        bench_ivf(args.ivf, args.shard, args.ivf_factory, args.nprobe, args.queries, work)
    print(f"load average at end: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
