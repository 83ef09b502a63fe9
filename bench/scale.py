"""Scale: streaming ingest single-process vs. Ray at growing sizes, and an on-disk IVF at 1M vectors.

Ingest: SciFact abstracts repeated with distinct ids (JSONL files of 200 records) until each size
in passages is reached; every run is `rag ingest` in its own subprocess, once in-process and once
with `--ray-address` against a `ray start --head` cluster on loopback started here. Reported:
passages/s and peak memory (below). Flat passages/s and flat RSS across sizes is the streaming claim; the Ray/single
throughput ratio is the overhead of Ray on one machine. The encoder runtime is the same for both
modes (`--encoder-runtime auto`, the project's default, by default: which encoder runs does not
change whether rates and memory stay flat), and its exported graph is cached once for all runs.
With `--lock FILE`, each run holds `flock FILE` (released between runs, so a shared
machine's other timing runs are not blocked for the whole bench); the load average is
recorded before and after every run, and its median while the run lasts.

Memory: the peak over samples every 0.25 s of the resident memory of the `rag` process and, for
Ray, of the run's Ray worker processes (`MapWorker`: the chunking and embedding actors) and of
every process of the Ray node (raylet, GCS, idle workers). Summed RSS counts pages shared between
processes (Ray's object store in /dev/shm, shared libraries) once per process, so the totals are
also given as summed PSS (each shared page split between its sharers), the figure that adds up.

On-disk IVF: synthetic vectors (a mixture of Gaussians on the sphere, as bench/query.py) written
shard by shard as on-disk segments (`indexes.ondisk.OnDiskIndex`: the first shard trains the IVF,
each further shard is filled into a copy of it, as a collection's write batches are), merged list
by list into one segment on disk, then searched memory-mapped in a fresh process: RSS while
searching against the size of a Flat index, whole and the index's own share (the growth over a
baseline with everything but the index loaded, and the data file's mapped pages, as more queries
probe more lists), recall@10 against exact search (computed shard by shard), p50 latency.

    python bench/scale.py [--sizes 10000,20000,40000] [--modes single,ray] [--ivf 1000000]
                          [--encoder-runtime auto] [--quantize | --no-quantize] [--lock /tmp/bench.lock]
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import itertools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
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


def _pss_mb(pid: int) -> float:
    """Proportional set size in MB: shared pages divided among the processes that map them."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _process_table() -> dict[int, tuple[int, bytes]]:
    """pid -> (parent pid, command line) of every process."""
    table: dict[int, tuple[int, bytes]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                table[int(entry.name)] = (ppid, (entry / "cmdline").read_bytes())
            except (OSError, IndexError, ValueError):
                continue
    return table


def _below(root: int, table: dict[int, tuple[int, bytes]]) -> list[int]:
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, (ppid, _) in table.items() if ppid == parent]
        found.extend(children)
        frontier.extend(children)
    return found


def _run_sampled(cmd: list[str], env: dict[str, str], ray_root: int | None = None) -> tuple[str, float, dict[str, float]]:
    """Run `cmd`; return its stdout, wall seconds and peak memory in MB: `driver` (the process's
    RSS) and, with `ray_root` (the Ray head's pid), `actors` (RSS of the run's MapWorker
    processes), `ray_node` (RSS of every process of the node, actors included) and `total_pss`
    (PSS of the driver and the node's processes); and `load1_median`, the median 1-minute load
    average over the samples."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = {"driver": 0.0, "actors": 0.0, "ray_node": 0.0, "total_pss": 0.0}
    loads = []
    while proc.poll() is None:
        loads.append(os.getloadavg()[0])
        sample = {"driver": _rss_mb(proc.pid)}
        if ray_root is not None:
            table = _process_table()
            node = _below(ray_root, table)
            sample["actors"] = sum(_rss_mb(p) for p in node if b"MapWorker" in table[p][1])
            sample["ray_node"] = sum(_rss_mb(p) for p in node)
            sample["total_pss"] = _pss_mb(proc.pid) + sum(_pss_mb(p) for p in node)
        for key, value in sample.items():
            peak[key] = max(peak[key], value)
        time.sleep(0.25)
    out, err = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed: {err[-2000:]}")
    peak["load1_median"] = float(np.median(loads)) if loads else os.getloadavg()[0]
    return out, time.perf_counter() - started, peak


@contextlib.contextmanager
def _locked(path: str | None) -> Iterator[None]:
    """`flock path` for the duration (nothing without a path)."""
    if not path:
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
            stop_head(head, temp)
            raise RuntimeError("the Ray head node did not come up")
        time.sleep(2)
    return head, address, env, temp


def stop_head(head: subprocess.Popen[bytes], temp: Path) -> None:
    """Stop the head node started by start_head and every process it started; remove its temp folder."""
    tree = [head.pid, *_below(head.pid, _process_table())]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in tree:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(3)
    head.wait(timeout=30)
    shutil.rmtree(temp, ignore_errors=True)


def bench_ingest(
    sizes: list[int], modes: list[str], work: Path, cpus: int, encoder: dict[str, str], lock: str | None
) -> list[dict[str, Any]]:
    results = []
    head = None
    env = dict(os.environ)
    address = ""
    if "ray" in modes:
        head, address, env, temp = start_head(cpus)
    env.update(PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", **encoder)
    models = work / "models"  # the exported encoder graph, shared by every run's data home
    models.mkdir(parents=True, exist_ok=True)

    def ingest(home: Path, corpus: Path, extra: list[str], ray_root: int | None) -> tuple[dict[str, Any], float, dict[str, float]]:
        home.mkdir(parents=True, exist_ok=True)
        if not (home / "models").exists():
            (home / "models").symlink_to(models)
        cmd = [sys.executable, "-m", "cli", "--home", str(home), "ingest", str(corpus), "-c", "bench", "--json", *extra]
        out, wall, peak = _run_sampled(cmd, env, ray_root)
        return json.loads(out), wall, peak

    try:
        warm = work / "corpus-warm"
        make_corpus(warm, 20)
        ingest(work / "home-warm", warm, [], None)  # exports (and quantises) the encoder once, untimed
        for size in sizes:
            corpus = work / f"corpus-{size}"
            records = make_corpus(corpus, size)
            for mode in modes:
                extra = ["--ray-address", address] if mode == "ray" else []
                with _locked(lock):
                    load_before = os.getloadavg()
                    report, wall, peak = ingest(work / f"home-{mode}-{size}", corpus, extra, head.pid if mode == "ray" and head else None)
                    load_after = os.getloadavg()
                row = {
                    "mode": mode,
                    **encoder,
                    "records": records,
                    "passages": report["chunks_added"],
                    "wall_s": round(wall, 1),  # with interpreter start and model load
                    "ingest_s": round(report["seconds"], 1),  # the run itself (Ray: with actor start-up)
                    "passages_per_s": round(report["chunks_added"] / report["seconds"], 2),
                    "peak_rss_mb": round(peak["driver"]),
                    **({f"peak_{k}_mb": round(peak[k]) for k in ("actors", "ray_node", "total_pss")} if mode == "ray" else {}),
                    "load1_median": round(peak["load1_median"], 1),
                    "load_before": [round(x, 2) for x in load_before],
                    "load_after": [round(x, 2) for x in load_after],
                    "finished_utc": time.strftime("%H:%M:%S", time.gmtime()),
                }
                results.append(row)
                print(json.dumps(row), flush=True)
    finally:
        if head is not None:
            stop_head(head, temp)
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


def _mapping_rss_mb(suffix: str) -> float:
    """Resident MB of this process's mappings of files whose name ends with `suffix` (/proc/self/smaps)."""
    total, inside = 0.0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5 and ":" not in head[0]:  # a mapping's first line
            inside = line.rstrip().endswith(suffix)
        elif inside and line.startswith("Rss:"):
            total += int(head[1]) / 1024
    return total


def child_search(folder: Path, n: int, shard: int, factory: str, nprobe: int, queries: int) -> None:
    """Search the merged on-disk index in this fresh process. The index's own memory is isolated
    as the growth over a baseline taken once everything but the index is in place (Python, numpy,
    FAISS and its threads warmed on a tiny in-memory IVF, the queries), and as the resident pages
    of the data file's mapping; both after 1, 10, 50, ... queries, with the share of lists probed."""
    import faiss

    from indexes.config import SearchParams
    from indexes.ondisk import DATA_SUFFIX, OnDiskIndex

    q = _queries(queries)
    params = SearchParams(nprobe=nprobe)
    warm = faiss.index_factory(384, "IVF16,Flat", faiss.METRIC_INNER_PRODUCT)
    sample = _queries(2000)
    warm.train(sample)
    warm.add(sample)
    warm.search(q[:2], 10)
    del warm, sample
    before = {f: _rss_mb(os.getpid(), f) for f in ("VmRSS", "RssAnon", "RssFile")}
    index = OnDiskIndex.load(folder / "merged.faiss", f"OnDisk,{factory}")
    opened = _rss_mb(os.getpid())
    ivf = faiss.extract_index_ivf(index.index)
    sizes = np.array([ivf.invlists.list_size(i) for i in range(ivf.nlist)])
    probed: set[int] = set()
    latencies, found, steps = [], [], []
    marks = sorted({m for m in (1, 10, 50, queries) if m <= queries})
    for number, row in enumerate(q, 1):
        t = time.perf_counter()
        _, ids = index.search(row, 10, params)
        latencies.append((time.perf_counter() - t) * 1000)
        found.append(ids[0])
        _, lists = ivf.quantizer.search(row.reshape(1, -1), nprobe)
        probed.update(int(x) for x in lists[0] if x >= 0)
        if number in marks:
            now = {f: _rss_mb(os.getpid(), f) for f in ("VmRSS", "RssAnon", "RssFile")}
            steps.append({
                "queries": number,
                "lists_probed": len(probed),
                "vectors_in_probed_lists": int(sizes[sorted(probed)].sum()),
                "rss_mb": now["VmRSS"],
                "index_rss_mb": now["VmRSS"] - before["VmRSS"],  # what this process grew by: the index's share
                "index_anon_mb": now["RssAnon"] - before["RssAnon"],
                "anon_mb": now["RssAnon"],
                "file_pages_mb": now["RssFile"],
                "data_file_mapped_mb": _mapping_rss_mb(DATA_SUFFIX),
            })
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
    last = steps[-1]
    print(json.dumps({
        "baseline": before, "opened_rss_mb": opened, "steps": steps,
        "rss_searching_mb": last["rss_mb"], "index_rss_mb": last["index_rss_mb"],
        "anon_searching_mb": last["anon_mb"], "file_searching_mb": last["file_pages_mb"],
        "p50_ms": float(np.median(latencies)), "p99_ms": float(np.percentile(latencies, 99)), "recall_at_10": recall,
    }))


def bench_ivf(n: int, shard: int, factory: str, nprobe: int, queries: int, work: Path) -> dict[str, Any]:
    folder = work / "ivf"
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    me = [sys.executable, str(Path(__file__).resolve())]
    common = ["--ivf", str(n), "--shard", str(shard), "--ivf-factory", factory, "--dir", str(folder)]
    out, _, build_peak = _run_sampled([*me, "--child", "build", *common], env)
    built = json.loads(out)
    out, _, _ = _run_sampled([*me, "--child", "search", *common, "--nprobe", str(nprobe), "--queries", str(queries)], env)
    searched = json.loads(out)
    flat_mb = n * 384 * 4 / 2**20
    row = {
        "vectors": n,
        "factory": f"OnDisk,{factory}",
        "nprobe": nprobe,
        "build_s": round(built["build_s"], 1),
        "segments_s": round(built["segments_s"], 1),
        "merge_s": round(built["merge_s"], 1),
        "build_peak_rss_mb": round(build_peak["driver"]),
        "data_mb": round(built["data_bytes"] / 2**20, 1),
        "flat_index_mb": round(flat_mb, 1),
        "rss_searching_mb": round(searched["rss_searching_mb"]),
        "rss_searching_vs_flat": round(searched["rss_searching_mb"] / flat_mb, 3),
        "anon_searching_mb": round(searched["anon_searching_mb"]),
        "file_pages_searching_mb": round(searched["file_searching_mb"]),
        "baseline_rss_mb": {k: round(v) for k, v in searched["baseline"].items()},
        "index_rss_mb": round(searched["index_rss_mb"]),
        "index_rss_vs_flat": round(searched["index_rss_mb"] / flat_mb, 3),
        "by_queries": [
            {**{k: round(v, 1) if isinstance(v, float) else v for k, v in step.items()},
             "index_rss_vs_flat": round(step["index_rss_mb"] / flat_mb, 3)}
            for step in searched["steps"]
        ],
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
    parser.add_argument("--encoder-runtime", default="auto", choices=["auto", "torch", "onnx", "openvino"], help="RAG_ENCODER_RUNTIME of every ingest run")
    parser.add_argument("--quantize", action=argparse.BooleanOptionalAction, default=None, help="RAG_QUANTIZE of every ingest run (default: unset)")
    parser.add_argument("--lock", help="hold `flock LOCK` during each ingest run")
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
    if not args.dir:  # a folder of our own (children get it as --dir): gone when the run ends
        atexit.register(shutil.rmtree, work, ignore_errors=True)
    if args.child == "build":
        child_build(work, args.ivf, args.shard, args.ivf_factory)
        return
    if args.child == "search":
        child_search(work, args.ivf, args.shard, args.ivf_factory, args.nprobe, args.queries)
        return
    print(f"load average at start: {os.getloadavg()}", flush=True)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    encoder = {"RAG_ENCODER_RUNTIME": args.encoder_runtime, **({} if args.quantize is None else {"RAG_QUANTIZE": "1" if args.quantize else "0"})}
    rows = bench_ingest(sizes, args.modes.split(","), work, args.ray_cpus, encoder, args.lock) if sizes else []
    by = {(r["mode"], r["records"]): r for r in rows}
    for (mode, records), row in by.items():
        if mode == "ray" and ("single", records) in by:
            single = by[("single", records)]
            print(f"{row['passages']} passages: Ray/single throughput x{row['passages_per_s'] / single['passages_per_s']:.2f}, "
                  f"peak RSS single {single['peak_rss_mb']} MB; Ray: driver {row['peak_rss_mb']} MB, actors {row['peak_actors_mb']} MB, "
                  f"Ray node {row['peak_ray_node_mb']} MB, driver + node PSS {row['peak_total_pss_mb']} MB")
    if args.ivf:
        with _locked(args.lock):
            bench_ivf(args.ivf, args.shard, args.ivf_factory, args.nprobe, args.queries, work)
    print(f"load average at end: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
