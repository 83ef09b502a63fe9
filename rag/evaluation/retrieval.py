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
from rag.evaluation.files import read_utf8
from rag.evaluation.report import CUTOFFS, PassageRef, QueryRecord, RetrieverResult


@dataclass(frozen=True)
class BeirData:
    corpus: Path
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def read_beir(folder: Path, split: str = "test") -> BeirData:
    """Queries that have judgements, and the qrels of `split`; the corpus is ingested by its path."""
    folder = Path(folder)
    corpus = folder / "corpus.jsonl"
    queries_path = folder / "queries.jsonl"
    qrels_path = folder / "qrels" / f"{split}.tsv"
    for needed in (corpus, queries_path, qrels_path):
        if not needed.is_file():
            raise InvalidInput(f"not a BEIR folder: {needed} is missing")
    qrels: dict[str, dict[str, int]] = {}
    for number, row in enumerate(csv.reader(read_utf8(qrels_path).splitlines(), delimiter="\t"), start=1):
        if len(row) < 3 or (number == 1 and row[0] == "query-id"):  # files with and without a header
            continue
        try:
            qrels.setdefault(row[0], {})[row[1]] = int(row[2])
        except ValueError:
            raise InvalidInput(f"{qrels_path}:{number}: the score {row[2]!r} is not an integer") from None
    queries: dict[str, str] = {}
    for number, line in enumerate(read_utf8(queries_path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            query_id, text = str(record["_id"]), str(record["text"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise InvalidInput(f"{queries_path}:{number}: not a BEIR query ({type(exc).__name__}: {exc})") from None
        if query_id in qrels:
            queries[query_id] = text
    if not queries:
        raise InvalidInput(f"no query of {queries_path} has a judgement in {qrels_path}: nothing to evaluate")
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


def _trec_order(scores: dict[str, float]) -> list[str]:
    """trec_eval's order: score descending, then document id descending."""
    return [doc for doc, _ in sorted(scores.items(), key=lambda item: (-item[1], tuple(-ord(c) for c in item[0])))]


def first_relevant_rank(relevant: dict[str, int], scores: dict[str, float], cutoff: int | None = None) -> int | None:
    for rank, doc in enumerate(_trec_order(scores)[:cutoff], start=1):
        if relevant.get(doc, 0) > 0:
            return rank
    return None


def reciprocal_rank(relevant: dict[str, int], scores: dict[str, float], cutoff: int) -> float:
    rank = first_relevant_rank(relevant, scores, cutoff)
    return 0.0 if rank is None else 1.0 / rank


def latency_summary(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {"latency_p50_ms": 0.0, "latency_p95_ms": 0.0}
    ms = np.asarray(seconds) * 1000
    return {"latency_p50_ms": float(np.percentile(ms, 50)), "latency_p95_ms": float(np.percentile(ms, 95))}


@dataclass
class RetrievalRun:
    """Every query's ranked documents, its latency, and its top passages (for reports)."""

    run: dict[str, dict[str, float]]
    latencies: list[float]
    top_passages: dict[str, list[Passage]]


def run_queries(retriever: Any, data: BeirData, depth: int = 100, keep_passages: int = 3) -> RetrievalRun:
    """Run every query one at a time (as a user would), timing each."""
    result = RetrievalRun(run={}, latencies=[], top_passages={})
    for qid, text in data.queries.items():
        started = time.perf_counter()
        # Over-fetch passages so that `depth` distinct documents survive MaxP.
        passages = retriever.retrieve(text, k=depth * 2)
        result.latencies.append(time.perf_counter() - started)
        ranked = documents_from_passages(passages)
        result.run[qid] = dict(sorted(ranked.items(), key=lambda item: -item[1])[:depth])
        result.top_passages[qid] = list(passages[:keep_passages])
    return result


def evaluate_retrieval(retriever: Any, data: BeirData, depth: int = 100) -> dict[str, Any]:
    """Run every query one at a time (as a user would), timing each, and score the run."""
    return score_run(data, run_queries(retriever, data, depth))


def score_run(data: BeirData, result: RetrievalRun) -> dict[str, Any]:
    metrics = trec_metrics(data.qrels, result.run)
    return {**metrics, "queries": len(data.queries), **latency_summary(result.latencies)}


def metrics_at_k(
    qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]], cutoffs: tuple[int, ...]
) -> tuple[dict[str, dict[int, float]], dict[str, float]]:
    """Mean nDCG@k and Recall@k for each cutoff (trec_eval), and each query's nDCG@10."""
    import pytrec_eval

    ks = ",".join(str(k) for k in cutoffs)
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {f"ndcg_cut.{ks}", f"recall.{ks}"})
    per_query = evaluator.evaluate({q: run.get(q, {}) for q in qrels})
    n = max(len(per_query), 1)
    means = {
        name: {k: sum(v[f"{measure}_{k}"] for v in per_query.values()) / n for k in cutoffs}
        for name, measure in (("ndcg", "ndcg_cut"), ("recall", "recall"))
    }
    ndcg10 = {q: v.get("ndcg_cut_10", 0.0) for q, v in per_query.items()}
    return means, ndcg10


def report_result(name: str, data: BeirData, result: RetrievalRun) -> RetrieverResult:
    """One retriever's run in the shape the HTML report draws."""
    means, ndcg10 = metrics_at_k(data.qrels, result.run, CUTOFFS)
    queries = []
    for qid, text in data.queries.items():
        relevant = data.qrels.get(qid, {})
        queries.append(
            QueryRecord(
                id=qid,
                query=text,
                ndcg10=ndcg10.get(qid, 0.0),
                first_relevant=first_relevant_rank(relevant, result.run.get(qid, {})),
                relevant_ids=sorted(doc for doc, grade in relevant.items() if grade > 0),
                passages=[
                    PassageRef.from_mapping(p.to_dict(), relevant=relevant.get(p.external_id or str(p.doc_id), 0) > 0)
                    for p in result.top_passages.get(qid, [])
                ],
            )
        )
    return RetrieverResult(
        name=name,
        ndcg=means["ndcg"],
        recall=means["recall"],
        latencies_ms=[s * 1000 for s in result.latencies],
        queries=queries,
    )
