"""Self-contained HTML evaluation reports (`rag eval retrieval|qa … --report FILE.html`).

One page answers what a user asks of an evaluation: which retriever ranks best at the depth I
read (nDCG@k and Recall@k curves), how long a query takes (latency histogram), how good the
answers are (EM/F1) and what abstaining buys (answered rate against accuracy as the confidence
threshold moves), and which questions fail, with the passages behind each one.

Plots are matplotlib figures inlined as SVG; the page loads nothing from anywhere. Answer reports
take plain mappings (`AnswerRecord.from_mapping`), so any evaluation that produces per-question
records (question, gold, prediction, confidence score, found, correct) gets the same page.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

CUTOFFS = (1, 3, 5, 10, 20, 50, 100)
MAX_ROWS = 300


def reports_dir(home: Path) -> Path:
    """Where reports are kept for `rag serve` to list: RAG_HOME/reports."""
    return Path(home) / "reports"


def _owner_file(kept: Path) -> Path:
    # NAME.html.owner.json: never matches the served `*.html` names.
    return kept.with_name(kept.name + ".owner.json")


def report_collection(kept: Path) -> str | None:
    """The collection a kept report covers, or None when it records none (an older report, or an
    unreadable record): such a report is shown to unrestricted keys only."""
    try:
        found = json.loads(_owner_file(kept).read_text(encoding="utf-8")).get("collection")
    except (OSError, ValueError, AttributeError):
        return None
    return found if isinstance(found, str) else None


# -- records -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PassageRef:
    """A passage shown in the report: enough to read it and find it in its document."""

    key: str
    source: str
    title: str
    start: int
    end: int
    text: str
    relevant: bool | None = None

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any], relevant: bool | None = None) -> PassageRef:
        key = str(d.get("chunk_id", "")) or hashlib.sha1(
            f"{d.get('source', '')}\0{d.get('start', 0)}\0{d.get('title', '')}\0{d.get('text', '')}".encode()
        ).hexdigest()[:16]
        return cls(
            key=key,
            source=str(d.get("source", "")),
            title=str(d.get("title", "") or ""),
            start=int(d.get("start", 0) or 0),
            end=int(d.get("end", 0) or 0),
            text=str(d.get("text", "")),
            relevant=relevant,
        )


@dataclass(frozen=True)
class AnswerRecord:
    """One question of a QA-style evaluation (open-domain QA, grounding, …)."""

    question: str
    golds: list[str]
    prediction: str
    score: float | None
    found: bool
    correct: bool
    f1: float | None = None
    latency_ms: float | None = None
    passages: list[PassageRef] = field(default_factory=list)
    cited: list[int] = field(default_factory=list)
    id: str = ""

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any]) -> AnswerRecord:
        """Accepts `gold` or `golds`, `prediction` or `answer`, `confidence` (preferred: what the
        system thresholds, e.g. the reader's margin in `rag eval grounding`) or `score`, `correct` or
        `em`; `f1`, `latency_ms`/`total_ms`, `passages` (Passage.to_dict shapes, any subset of
        keys) and `cited` (1-based passage numbers) are optional."""
        golds = d.get("golds", d.get("gold", []))
        golds = [golds] if isinstance(golds, str) else [str(g) for g in golds or []]
        score = d["confidence"] if d.get("confidence") is not None else d.get("score")
        correct = d.get("correct", d.get("em"))
        f1 = d.get("f1")
        latency = d.get("latency_ms", d.get("total_ms"))
        return cls(
            question=str(d["question"]),
            golds=golds,
            prediction=str(d.get("prediction", d.get("answer", "")) or ""),
            score=None if score is None else float(score),
            found=bool(d.get("found", True)),
            correct=bool(correct) if correct is not None else False,
            f1=None if f1 is None else float(f1),
            latency_ms=None if latency is None else float(latency),
            passages=[p if isinstance(p, PassageRef) else PassageRef.from_mapping(p) for p in d.get("passages", []) or []],
            cited=[int(n) for n in d.get("cited", []) or []],
            id=str(d.get("id", "")),
        )


@dataclass(frozen=True)
class QueryRecord:
    """One query of a retrieval evaluation, for the per-question table."""

    id: str
    query: str
    ndcg10: float
    first_relevant: int | None  # document rank of the first relevant document, None if not in the run
    relevant_ids: list[str]
    passages: list[PassageRef]


@dataclass(frozen=True)
class RetrieverResult:
    """One retriever's run: metric curves over `CUTOFFS`, latencies, and per-query records."""

    name: str
    ndcg: dict[int, float]
    recall: dict[int, float]
    latencies_ms: list[float]
    queries: list[QueryRecord] = field(default_factory=list)


@dataclass(frozen=True)
class CurvePoint:
    threshold: float
    answered_rate: float
    accuracy: float
    f1: float | None


def abstention_curve(records: Sequence[AnswerRecord]) -> list[CurvePoint]:
    """Answer only when the confidence score is at least t: for each distinct t, the share of all
    questions answered and the accuracy (and mean F1) over those answered. Records that abstained
    already, or carry no score, are never answered."""
    n = len(records)
    scored = sorted((r for r in records if r.found and r.score is not None), key=lambda r: -float(r.score or 0.0))
    points: list[CurvePoint] = []
    correct = 0
    f1_sum = 0.0
    has_f1 = all(r.f1 is not None for r in scored)
    for i, r in enumerate(scored, start=1):
        correct += int(r.correct)
        f1_sum += r.f1 or 0.0
        if i == len(scored) or scored[i].score != r.score:
            points.append(CurvePoint(float(r.score or 0.0), i / n, correct / i, f1_sum / i if has_f1 else None))
    return points


# -- plots -------------------------------------------------------------------------------------
def _svg(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog and doctype: the SVG is inlined


def _figure(width: float = 7.0, height: float = 3.4, ncols: int = 1) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "font.size": 9, "axes.spines.top": False, "axes.spines.right": False})
    return plt.subplots(1, ncols, figsize=(width, height))


def plot_curves(results: Sequence[RetrieverResult]) -> str:
    fig, (left, right) = _figure(ncols=2)
    for result in results:
        ks = sorted(result.ndcg)
        left.plot(ks, [result.ndcg[k] for k in ks], marker="o", label=result.name)
        right.plot(ks, [result.recall[k] for k in ks], marker="o", label=result.name)
    for axis, title in ((left, "nDCG@k"), (right, "Recall@k")):
        axis.set_xscale("log")
        axis.set_xticks(list(CUTOFFS), [str(k) for k in CUTOFFS])
        axis.set_xlabel("k (documents)")
        axis.set_ylim(0, 1)
        axis.set_title(title)
        axis.grid(alpha=0.3)
    left.legend(loc="lower right")
    return _svg(fig)


def plot_latency(series: Mapping[str, Sequence[float]]) -> str:
    fig, axis = _figure()
    values = [v for vs in series.values() for v in vs]
    bins = np.histogram_bin_edges(values, bins=40) if values else 10
    for name, ms in series.items():
        if ms:
            p50, p95 = np.percentile(ms, [50, 95])
            axis.hist(ms, bins=bins, alpha=0.55, label=f"{name}: p50 {p50:.1f} ms, p95 {p95:.1f} ms")
    axis.set_xlabel("milliseconds per query")
    axis.set_ylabel("queries")
    axis.legend()
    axis.grid(alpha=0.3)
    return _svg(fig)


def plot_tradeoff(points: Sequence[CurvePoint], operating: tuple[float, float] | None) -> str:
    fig, axis = _figure()
    x = [p.answered_rate for p in points]
    axis.plot(x, [p.accuracy for p in points], label="accuracy (share correct) of the answered", drawstyle="steps-post")
    if points and points[0].f1 is not None:
        axis.plot(x, [p.f1 or 0.0 for p in points], label="mean F1 of the answered", drawstyle="steps-post", alpha=0.8)
    for fraction in (0.25, 0.5, 0.75):
        if points:
            p = min(points, key=lambda q: abs(q.answered_rate - fraction * points[-1].answered_rate))
            axis.annotate(f"t={p.threshold:.3g}", (p.answered_rate, p.accuracy), textcoords="offset points", xytext=(4, 6), fontsize=7)
    if operating is not None:
        axis.plot([operating[0]], [operating[1]], "o", color="black", label="as evaluated (the system's own abstentions)")
    axis.set_xlabel("answered rate (questions answered / all questions)")
    axis.set_ylabel("accuracy")
    axis.set_xlim(0, 1.02)
    axis.set_ylim(0, 1.02)
    axis.legend(loc="lower left")
    axis.grid(alpha=0.3)
    return _svg(fig)


# -- page --------------------------------------------------------------------------------------
_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2330;margin:0;background:#f6f7fa}
main{max-width:1100px;margin:0 auto;padding:18px 24px}
h1{font-size:22px;margin:8px 0 2px} h2{font-size:17px;margin:26px 0 8px} .muted{color:#5b6475}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:12px 0}
.card{background:#fff;border:1px solid #d9dee7;border-radius:8px;padding:8px 14px;min-width:120px}
.card b{display:block;font-size:20px}
figure{background:#fff;border:1px solid #d9dee7;border-radius:8px;margin:10px 0;padding:10px}
figure svg{max-width:100%;height:auto} figcaption{color:#5b6475;font-size:13px}
table{border-collapse:collapse;width:100%;background:#fff;font-size:13px}
th,td{border:1px solid #d9dee7;padding:4px 6px;vertical-align:top;text-align:left}
tr.bad td:first-child{border-left:3px solid #b3261e} tr.good td:first-child{border-left:3px solid #1a7f37}
.passage{background:#fff;border:1px solid #d9dee7;border-radius:8px;padding:8px 12px;margin:8px 0;white-space:pre-wrap}
.passage:target{outline:3px solid #2457c5} .rel{color:#1a7f37;font-weight:600}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _cards(summary: Mapping[str, Any]) -> str:
    cells = []
    for key, value in summary.items():
        if isinstance(value, float):
            shown = f"{value:.4g}"
        elif isinstance(value, (int, str)) and not isinstance(value, bool):
            shown = str(value)
        else:
            continue
        cells.append(f'<div class="card"><span class="muted">{_e(key)}</span><b>{_e(shown)}</b></div>')
    return f'<div class="cards">{"".join(cells)}</div>'


def _figure_block(svg: str, caption: str, name: str) -> str:
    return f'<figure class="plot" data-plot="{_e(name)}">{svg}<figcaption>{_e(caption)}</figcaption></figure>'


class _Passages:
    """Collects the passages the tables link to; each is rendered once, with an anchor."""

    def __init__(self) -> None:
        self.items: dict[str, PassageRef] = {}

    def link(self, passage: PassageRef, label: str) -> str:
        anchor = self.anchor(passage)
        self.items.setdefault(anchor, passage)
        mark = ' class="rel"' if passage.relevant else ""
        return f'<a{mark} href="#{anchor}" title="{_e(passage.source)}">{_e(label)}</a>'

    @staticmethod
    def anchor(passage: PassageRef) -> str:
        return "p-" + "".join(c if c.isalnum() else "-" for c in passage.key)

    def render(self) -> str:
        if not self.items:
            return ""
        blocks = []
        for anchor, p in self.items.items():
            where = f"{p.source}:{p.start}-{p.end}"
            relevant = ' <span class="rel">relevant</span>' if p.relevant else ""
            blocks.append(
                f'<div class="passage" id="{anchor}"><div class="muted">{_e(p.title or "")} — {_e(where)}{relevant}</div>{_e(p.text)}</div>'
            )
        return "<h2>Passages</h2>" + "".join(blocks)


def _page(title: str, subtitle: str, body: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f"<style>{_STYLE}</style></head><body><main><h1>{_e(title)}</h1>"
        f'<div class="muted">{_e(subtitle)} · generated {stamp} by rag</div>{body}</main></body></html>'
    )


def retrieval_report(results: Sequence[RetrieverResult], summary: Mapping[str, Any], title: str) -> str:
    """Curves for every retriever; the table and passages are the first retriever's."""
    passages = _Passages()
    main = results[0]
    parts = [_cards(summary)]
    parts.append(
        _figure_block(
            plot_curves(results),
            "nDCG@k and Recall@k at k = 1…100 documents (a document scores as its best passage). "
            "Read the curve at the depth your reader or user looks at.",
            "curves",
        )
    )
    parts.append(
        _figure_block(
            plot_latency({r.name: r.latencies_ms for r in results}),
            "Latency of one query at a time, as a user sends them.",
            "latency",
        )
    )
    rows = sorted(main.queries, key=lambda q: (q.ndcg10, q.id))[:MAX_ROWS]
    body = []
    for q in rows:
        links = " ".join(passages.link(p, f"[{i}]") for i, p in enumerate(q.passages, start=1))
        css = "good" if q.first_relevant == 1 else ("bad" if q.first_relevant is None or q.first_relevant > 10 else "")
        rank = "—" if q.first_relevant is None else str(q.first_relevant)
        body.append(
            f'<tr class="{css}"><td>{_e(q.id)}</td><td>{_e(q.query)}</td><td>{q.ndcg10:.3f}</td><td>{rank}</td>'
            f"<td>{_e(', '.join(q.relevant_ids))}</td><td>{links}</td></tr>"
        )
    parts.append(
        f"<h2>Queries, worst first ({len(rows)} of {len(main.queries)}, {_e(main.name)})</h2>"
        '<table id="questions"><thead><tr><th>id</th><th>query</th><th>nDCG@10</th><th>first relevant rank</th>'
        "<th>relevant documents</th><th>top passages (green: from a relevant document)</th></tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )
    parts.append(passages.render())
    return _page(title, f"retrieval evaluation · {len(main.queries)} queries", "".join(parts))


def answer_report(records: Sequence[AnswerRecord | Mapping[str, Any]], summary: Mapping[str, Any], title: str) -> str:
    """EM/F1, the abstention trade-off, latency and a per-question table, from any answer records."""
    items = [r if isinstance(r, AnswerRecord) else AnswerRecord.from_mapping(r) for r in records]
    n = max(len(items), 1)
    answered = [r for r in items if r.found]
    headline = {
        "questions": len(items),
        "exact match / accuracy": sum(r.correct for r in items) / n,
        **({"mean F1": sum(r.f1 or 0.0 for r in items) / n} if all(r.f1 is not None for r in items) else {}),
        "answered rate": len(answered) / n,
        "accuracy when answered": (sum(r.correct for r in answered) / len(answered)) if answered else 0.0,
    }
    # The run's own figures follow, less those the headline already shows from the records.
    repeated = {"questions", "exact_match", "f1", "answered_rate"}
    parts = [_cards({**headline, **{k: v for k, v in summary.items() if k not in repeated}})]
    points = abstention_curve(items)
    if points:
        operating = (len(answered) / n, headline["accuracy when answered"])
        parts.append(
            _figure_block(
                plot_tradeoff(points, operating),
                "Abstention trade-off: answer only when the confidence score is at least t. Moving left "
                "answers fewer questions; the curve shows what accuracy that buys.",
                "tradeoff",
            )
        )
    else:
        parts.append('<p class="muted">No answer carries a confidence score: no abstention curve.</p>')
    latencies = [r.latency_ms for r in items if r.latency_ms is not None]
    if latencies:
        parts.append(_figure_block(plot_latency({"answer": latencies}), "Time per question, end to end.", "latency"))
    passages = _Passages()
    rows = sorted(items, key=lambda r: (r.correct, -(r.score or 0.0)))[:MAX_ROWS]
    body = []
    for r in rows:
        links = " ".join(
            passages.link(p, f"[{i}]" + ("*" if i in r.cited else "")) for i, p in enumerate(r.passages, start=1)
        )
        f1 = "" if r.f1 is None else f"{r.f1:.2f}"
        score = "" if r.score is None else f"{r.score:.3g}"
        prediction = r.prediction if r.found else f"(abstained) {r.prediction}"
        body.append(
            f'<tr class="{"good" if r.correct else "bad"}"><td>{_e(r.question)}</td><td>{_e(" | ".join(r.golds))}</td>'
            f"<td>{_e(prediction)}</td><td>{score}</td><td>{'yes' if r.correct else 'no'}</td><td>{f1}</td><td>{links}</td></tr>"
        )
    parts.append(
        f"<h2>Questions, wrong first ({len(rows)} of {len(items)})</h2>"
        '<table id="questions"><thead><tr><th>question</th><th>gold</th><th>prediction</th><th>confidence</th>'
        "<th>correct</th><th>F1</th><th>passages (* cited)</th></tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )
    parts.append(passages.render())
    return _page(title, f"answer evaluation · {len(items)} questions", "".join(parts))


def write_report(page: str, path: Path, home: Path, collection: str) -> Path:
    """Write the page to `path` and keep a copy in RAG_HOME/reports for `rag serve` to list,
    recording the collection it covers: the page shows that collection's questions and passages,
    so the server shows it only to keys that may read that collection."""
    path = Path(path)
    folder = reports_dir(home)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", path.stem).strip("-.") or "report"
    kept = folder / f"{name}.html"
    folder.mkdir(parents=True, exist_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The kept page goes first, then its owner record, then the new page: no moment shows a page
    # under another collection's record (with no record, only unrestricted keys see a page).
    kept.unlink(missing_ok=True)
    owner = _owner_file(kept)
    owner_tmp = owner.with_name(owner.name + ".tmp")
    owner_tmp.write_text(json.dumps({"collection": collection}), encoding="utf-8")
    owner_tmp.replace(owner)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(page, encoding="utf-8")
    temporary.replace(path)
    if kept.resolve() != path.resolve():
        shutil.copyfile(path, kept)
    return kept


def qa_answer_records(records: Sequence[Any]) -> list[AnswerRecord]:
    """`rag.evaluation.qa.QARecord`s as answer records: correct means exact match; the
    confidence is the answer's score."""
    out = []
    for record in records:
        row = record.to_dict()
        answer = record.answer
        out.append(
            AnswerRecord.from_mapping(
                {
                    **row,
                    "correct": float(row["em"]) >= 1.0,
                    "score": answer.score,
                    "passages": [p.to_dict() for p in answer.passages],
                    "cited": [c.n for c in answer.citations],
                }
            )
        )
    return out
