"""Retrieval evaluation on a BEIR folder: nDCG@10, Recall@100, MRR@10 as trec_eval computes them.

Passages are chunks; a document's score is its best chunk's score (MaxP), the usual way to rank
documents with a passage index.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from indexes.errors import InvalidInput
from indexes.types import Passage


@dataclass(frozen=True)
class BeirData:
    corpus: Path
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def read_beir(folder: Path, split: str = "test") -> BeirData:
    folder = Path(folder)
    corpus = folder / "corpus.jsonl"
    queries_path = folder / "queries.jsonl"
    qrels_path = folder / "qrels" / f"{split}.tsv"
    for needed in (corpus, queries_path, qrels_path):
        if not needed.is_file():
            raise InvalidInput(f"not a BEIR folder: {needed} is missing")
    qrels: dict[str, dict[str, int]] = {}
    with qrels_path.open(encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter="\t")
        header = next(reader, None)
        if header and header[0] != "query-id":  # files without a header
            qrels.setdefault(header[0], {})[header[1]] = int(header[2])
        for row in reader:
            if len(row) >= 3:
                qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    queries: dict[str, str] = {}
    with queries_path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                record = json.loads(line)
                if str(record["_id"]) in qrels:
                    queries[str(record["_id"])] = record["text"]
    return BeirData(corpus=corpus, queries=queries, qrels=qrels)


def documents_from_passages(passages: list[Passage]) -> dict[str, float]:
    """MaxP: each document scored by its best passage."""
    scores: dict[str, float] = {}
    for passage in passages:
        key = passage.external_id or str(passage.doc_id)
        if key not in scores or passage.score > scores[key]:
            scores[key] = passage.score
    return scores


def trec_metrics(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> dict[str, float]:
    """Mean nDCG@10, Recall@100 and MRR@10 over the queries of `qrels`, via trec_eval."""
    import pytrec_eval

    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"})
    per_query = evaluator.evaluate({q: run.get(q, {}) for q in qrels})
    ndcg = [v["ndcg_cut_10"] for v in per_query.values()]
    recall = [v["recall_100"] for v in per_query.values()]
    mrr = [reciprocal_rank(qrels[q], run.get(q, {}), 10) for q in qrels]
    n = max(len(qrels), 1)
    return {"ndcg@10": sum(ndcg) / n, "recall@100": sum(recall) / n, "mrr@10": sum(mrr) / n}


def reciprocal_rank(relevant: dict[str, int], scores: dict[str, float], cutoff: int) -> float:
    # trec_eval order: score descending, then document id descending.
    ranked = sorted(scores.items(), key=lambda item: (-item[1], tuple(-ord(c) for c in item[0])))
    for rank, (doc, _) in enumerate(ranked[:cutoff], start=1):
        if relevant.get(doc, 0) > 0:
            return 1.0 / rank
    return 0.0


def latency_summary(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {"latency_p50_ms": 0.0, "latency_p95_ms": 0.0}
    ms = np.asarray(seconds) * 1000
    return {"latency_p50_ms": float(np.percentile(ms, 50)), "latency_p95_ms": float(np.percentile(ms, 95))}


def evaluate_retrieval(retriever: Any, data: BeirData, depth: int = 100) -> dict[str, Any]:
    """Run every query one at a time (as a user would), timing each, and score the run."""
    run: dict[str, dict[str, float]] = {}
    latencies: list[float] = []
    for qid, text in data.queries.items():
        started = time.perf_counter()
        # Over-fetch passages so that `depth` distinct documents survive MaxP.
        passages = retriever.retrieve(text, k=depth * 2)
        latencies.append(time.perf_counter() - started)
        ranked = documents_from_passages(passages)
        run[qid] = dict(sorted(ranked.items(), key=lambda item: -item[1])[:depth])
    metrics = trec_metrics(data.qrels, run)
    return {**metrics, "queries": len(data.queries), **latency_summary(latencies)}
