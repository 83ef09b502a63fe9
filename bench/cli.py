"""One search as a command, start to finish: `rag search` against the ten-line script a user would
otherwise write (sentence-transformers + FAISS over the same passages), each a fresh process.

    python bench/cli.py                 # 200 SciFact abstracts, 7 rounds
    python bench/cli.py --docs 1000 --rounds 11
    python bench/cli.py --ask           # cold `rag ask` on the demo corpus: shipped reader vs the torch one

With --ask, each round runs one extractive `rag ask` process with the shipped reader (ONNX Runtime,
int8 weights) and one with the previous reader (the fp32 checkpoint from ../shared on torch,
RAG_READER_RUNTIME=torch), and one generative `rag ask` (SmolLM2 via llama.cpp, streamed): the
load figure is the answer's own `load_ms`, the whole process is wall time from exec to exit.

Both sides load their model and index and answer one query per process; what differs is what
they import and load on the way. Rounds alternate the two (order rotating), and the medians and
their ratio are printed with the load average, so a busy machine shows. The data home, the
baseline's index and the corpus live in one temporary folder, removed at exit.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCIFACT = REPO.parent / "shared" / "data" / "beir" / "scifact"
QUERY = "Does vitamin D deficiency raise the risk of fractures?"

# What a user writes without rag: load the model and the index, embed the query, search, print.
BASELINE = """
import json, sys
import faiss
from sentence_transformers import SentenceTransformer
model = SentenceTransformer(sys.argv[1], device="cpu")
index = faiss.read_index(sys.argv[2])
texts = json.load(open(sys.argv[3], encoding="utf-8"))
scores, ids = index.search(model.encode([sys.argv[4]], normalize_embeddings=True), 5)
print(json.dumps([{"score": float(s), "text": texts[i]} for s, i in zip(scores[0], ids[0])]))
"""


def _corpus(docs: int, folder: Path) -> tuple[Path, list[str]]:
    path = folder / "corpus.jsonl"
    texts: list[str] = []
    with (SCIFACT / "corpus.jsonl").open(encoding="utf-8") as source, path.open("w", encoding="utf-8") as out:
        for _, line in zip(range(docs), source):
            record = json.loads(line)
            out.write(json.dumps({"id": record["_id"], "title": record["title"], "text": record["text"]}) + "\n")
            texts.append(record["title"] + "\n" + record["text"])
    return path, texts


def _timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0 or not json.loads(done.stdout):
        raise SystemExit(f"{command[0]} failed: {done.stderr[-2000:]}")
    return elapsed


ASK = "Where was Marie Curie born?"
TORCH_READER = REPO.parent / "shared" / "models" / "reader-minilm-l6-squad-na"


def _ask_once(rag: str, env: dict[str, str], generative: bool = False) -> dict[str, float]:
    """One cold `rag ask` process: its own timings plus the whole process's wall time (ms)."""
    mode = "generative" if generative else "extractive"
    command = [rag, "ask", "Where was Pierre Curie born?" if generative else ASK, "-c", "demo", "--mode", mode]
    started = time.perf_counter()
    done = subprocess.run(command + ([] if generative else ["--json"]), env=env, capture_output=True, text=True)
    wall = (time.perf_counter() - started) * 1000
    if done.returncode != 0:
        raise SystemExit(f"rag ask failed: {done.stderr[-2000:]}")
    if generative:  # the text output's last line: "load N ms  retrieve N ms  first_token N ms ..."
        words = done.stdout.strip().splitlines()[-1].split()
        timings = {f"{words[i]}_ms": float(words[i + 1]) for i in range(0, len(words) - 1, 3)}
    else:
        timings = json.loads(done.stdout)["timings"]
        if json.loads(done.stdout)["answer"] != "Warsaw":
            raise SystemExit(f"unexpected answer: {done.stdout[:500]}")
    return {**timings, "process_ms": wall}


def ask_main(rounds: int) -> None:
    """Cold `rag ask` processes on the demo corpus, the shipped reader against the torch one."""
    work = Path(tempfile.mkdtemp(prefix="rag-bench-ask-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAG_") or k == "RAG_GRAPH_CACHE"}
    env = {**base, "RAG_HOME": str(work / "home"), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    rag = str(Path(sys.executable).parent / "rag")
    subprocess.run([rag, "ingest", str(REPO / "examples" / "corpus"), "--collection", "demo"], env=env, check=True, capture_output=True)
    sides = {
        "shipped reader (onnx int8)": env,
        "torch reader (fp32 checkpoint)": {**env, "RAG_READER_MODEL": str(TORCH_READER), "RAG_READER_RUNTIME": "torch"},
    }
    for side in sides.values():  # once each, untimed: the OS file cache, not the first run, is measured
        _ask_once(rag, side)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in [*sides, "generative (llama.cpp)"]}
    loads = [os.getloadavg()[0]]
    names = list(sides)
    for round_ in range(rounds):
        for name in names[round_ % 2 :] + names[: round_ % 2]:
            results[name].append(_ask_once(rag, sides[name]))
        results["generative (llama.cpp)"].append(_ask_once(rag, env, generative=True))
        loads.append(os.getloadavg()[0])
    print(f"cold `rag ask` processes, demo corpus, {rounds} rounds, {os.cpu_count()} CPUs, load average {min(loads):.1f}-{max(loads):.1f}")
    for name, runs in results.items():
        keys = [k for k in runs[0] if k.endswith("_ms")]
        medians = "  ".join(f"{k.removesuffix('_ms')} {statistics.median(r.get(k, 0.0) for r in runs):.0f}" for k in keys)
        print(f"  {name:32s} median ms: {medians}")
    for key in ("load_ms", "process_ms"):
        ratio = statistics.median(r[key] for r in results[names[1]]) / statistics.median(r[key] for r in results[names[0]])
        print(f"  {key.removesuffix('_ms')}: the shipped reader's is x{ratio:.2f} faster than the torch reader's (medians)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--ask", action="store_true", help="cold `rag ask` (demo corpus) instead of `rag search`")
    args = parser.parse_args()
    if args.ask:
        ask_main(args.rounds)
        return

    work = Path(tempfile.mkdtemp(prefix="rag-bench-cli-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    env = {**os.environ, "RAG_HOME": str(work / "home"), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    corpus, texts = _corpus(args.docs, work)
    rag = str(Path(sys.executable).parent / "rag")
    subprocess.run([rag, "ingest", str(corpus)], env=env, check=True, capture_output=True)

    # The baseline's index: the same model, the same texts, vectors normalised, inner product.
    import faiss
    from sentence_transformers import SentenceTransformer

    from indexes.encoder import DEFAULT_EMBEDDER, resolve_model_path

    model_path = resolve_model_path(DEFAULT_EMBEDDER)
    vectors = SentenceTransformer(model_path, device="cpu").encode(texts, normalize_embeddings=True)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    faiss.write_index(index, str(work / "baseline.faiss"))
    (work / "texts.json").write_text(json.dumps(texts), encoding="utf-8")

    commands = {
        "rag search": [rag, "search", QUERY, "-k", "5", "--json"],
        "sentence-transformers script": [sys.executable, "-c", BASELINE, model_path, str(work / "baseline.faiss"), str(work / "texts.json"), QUERY],
    }
    for command in commands.values():  # once each, untimed: the OS file cache, not the first run, is measured
        _timed(command, env)
    times: dict[str, list[float]] = {name: [] for name in commands}
    loads = [os.getloadavg()[0]]
    names = list(commands)
    for round_ in range(args.rounds):
        for name in names[round_ % 2 :] + names[: round_ % 2]:
            times[name].append(_timed(commands[name], env))
        loads.append(os.getloadavg()[0])

    print(f"one search per process, {args.docs} SciFact abstracts, {args.rounds} rounds, load average {min(loads):.1f}-{max(loads):.1f}")
    for name, values in times.items():
        print(f"  {name:30s} median {statistics.median(values):.2f} s  (min {min(values):.2f}, max {max(values):.2f})")
    ratio = statistics.median(times["sentence-transformers script"]) / statistics.median(times["rag search"])
    print(f"  rag search is x{ratio:.2f} the baseline's speed (its median time / ours)")


if __name__ == "__main__":
    main()
