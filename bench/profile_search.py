"""Where an in-process hybrid search's time goes: p50 latency over SciFact queries and a cProfile
of 200 searches on a small SciFact collection (the API's own retrieval call, no HTTP).

    python bench/profile_search.py [--docs 250] [--queries 200]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCIFACT = REPO.parent / "shared" / "data" / "beir" / "scifact"
sys.path.insert(0, str(REPO))


def main() -> None:
    from indexes.encoder import cpu_summary
    from rag.runtime import Runtime
    from rag.settings import Settings

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=250)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    print(cpu_summary())
    home = Path(tempfile.mkdtemp(prefix="rag-profile-"))
    try:
        corpus = home / "corpus.jsonl"
        with (SCIFACT / "corpus.jsonl").open(encoding="utf-8") as src, corpus.open("w", encoding="utf-8") as dst:
            for n, line in enumerate(src):
                if n >= args.docs:
                    break
                dst.write(line)
        runtime = Runtime(Settings(home=home, retriever="hybrid"))
        runtime.ingestor(runtime.writable_collection("scifact")).ingest_paths([str(corpus)])
        with (SCIFACT / "queries.jsonl").open(encoding="utf-8") as handle:
            queries = [json.loads(line)["text"] for line in handle][: args.queries]
        runtime.retriever("scifact", "hybrid").retrieve(queries[0], 5)  # warm
        latencies = []
        for query in queries:
            started = time.perf_counter()
            runtime.retriever("scifact", "hybrid").retrieve(query, 5)  # as the API does: a retriever per request
            latencies.append((time.perf_counter() - started) * 1000)
        print(f"in-process hybrid k=5: p50 {statistics.median(latencies):.2f} ms over {len(queries)} queries")
        profile = cProfile.Profile()
        profile.enable()
        for query in queries:
            runtime.retriever("scifact", "hybrid").retrieve(query, 5)
        profile.disable()
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(20)
        print(out.getvalue())
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
