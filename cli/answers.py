"""`rag ask` and `rag eval qa`. Models load inside the commands, so `rag --help` stays instant."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from cli.options import CollectionOpt, JsonOpt, ReportOpt, RetrieverOpt, WhereOpt, _one_of, _print_json, k_between, text_argument, where_option

if TYPE_CHECKING:
    from indexes.types import Passage
    from rag.answer import Answer, Citation


def _runtime(**overrides: Any) -> Any:
    from cli.main import _runtime as runtime

    return runtime(**overrides)


def _bold(text: str, tty: bool) -> str:
    return f"\033[1m{text}\033[0m" if tty else f"**{text}**"


def snippet(passage: Passage, start: int, end: int, tty: bool, width: int = 160) -> str:
    """The chunk text around [start, end) with that span highlighted, on one line."""
    text = passage.text
    left = max(0, start - width)
    right = min(len(text), end + width)
    before = ("…" if left > 0 else "") + text[left:start]
    after = text[end:right] + ("…" if right < len(text) else "")
    return " ".join(f"{before}{_bold(text[start:end], tty)}{after}".split())


def _label(passage_or_citation: Passage | Citation) -> str:
    return passage_or_citation.title or Path(passage_or_citation.source).name


def render(answer: Answer, tty: bool, streamed: str | None = None) -> list[str]:
    from rag.citations import annotate_attributed

    lines: list[str] = []
    if answer.details.get("note"):
        lines.append(f"note: {answer.details['note']}")
    shown = annotate_attributed(answer)  # `[n*]`: a citation the check attached, not the model
    if streamed is None:
        lines.append(shown)
    else:
        # the streamed text was a draft: only what the check kept is the answer
        dropped = len(set(answer.details.get("unsupported_sentences", [])))
        if not answer.found:
            lines.append("✗ draft withdrawn: the sources do not support it")
        elif dropped:
            lines.append(f"✗ draft cut: {dropped} sentence(s) the sources do not support were dropped")
        lines.append(f"answer: {shown}")
    flagged = answer.details.get("suspicious_passages")
    if flagged:
        lines.append(
            f"⚠ suspicious: {', '.join(f'[{n}]' for n in flagged)} contain instruction-like text (possible prompt injection); "
            "never used as the sole support of an answer"
        )
    removed = answer.details.get("removed_citations")
    if removed:
        lines.append(f"removed citations to sources that do not exist: {', '.join(f'[{n}]' for n in removed)}")
    for sentence in dict.fromkeys(answer.details.get("unsupported_sentences", [])) if answer.found else []:
        lines.append(f"dropped, not supported by the sources: {sentence}")
    if answer.citations:
        lines.append("")
    for c in answer.citations:
        status = "" if answer.mode == "extractive" else ("  ✓ verified" if c.verified else "  ✗ unverified")
        mark = "*" if c.origin == "attributed" else ""
        lines.append(f"[{c.n}{mark}] {_label(c)} — {c.source}:{c.start}-{c.end}{status}")
        passage = answer.passages[c.n - 1] if 0 < c.n <= len(answer.passages) else None
        if passage is not None:
            lines.append(f"    {snippet(passage, c.chunk_start, c.chunk_end, tty)}")
    if any(c.origin == "attributed" for c in answer.citations):
        lines.append("[n*] attributed: the model did not cite this sentence; the citation check found the source that supports it")
    if not answer.found and answer.passages:
        lines.append("")
        lines.append("best passages:")
        for n, p in enumerate(answer.passages[:3], start=1):
            lines.append(f"[{n}] {_label(p)} — {p.source}:{p.start}-{p.end}")
            lines.append(f"    {' '.join(p.text[:300].split())}{'…' if len(p.text) > 300 else ''}")
    timings = "  ".join(f"{key.removesuffix('_ms')} {value:.0f} ms" for key, value in answer.timings.items())
    if timings or answer.details.get("generator") or answer.details.get("verifier"):
        lines.append("")
    if answer.details.get("generator"):
        lines.append(f"generator: {answer.details['generator']}")
    if answer.details.get("verifier"):
        note = answer.details.get("verifier_note")
        lines.append(f"verifier: {answer.details['verifier']}" + (f" ({note})" if note else ""))
    if timings:
        lines.append(timings)
    return lines


THRESHOLD_GRID = [round(t * 0.5, 1) for t in range(-20, 51)]  # logits, for `rag eval grounding` curves and calibration
WEIGHT_GRID = (0.0, 1.0, 2.0, 3.0, 4.0)  # retrieval weights tried by the calibration



def ask(
    question: str = typer.Argument(..., callback=text_argument, help="the question"),
    collection: str | None = CollectionOpt,
    mode: str | None = typer.Option(
        None, "--mode", "-m", callback=_one_of("extractive", "generative"), help="extractive | generative [env RAG_ANSWER_MODE]"
    ),
    k: int | None = typer.Option(None, "-k", "--top-k", callback=k_between(1, 50), help="passages to read [env RAG_ANSWER_K, default 5]"),
    retriever: str | None = RetrieverOpt,
    where: list[str] | None = WhereOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Answer QUESTION from a collection, with citations to the passages it came from (only
    passages of documents matching --where)."""
    chosen = where_option(where)
    rt = _runtime(answer_mode=mode)
    pipeline = rt.ask_pipeline()
    if chosen:
        pipeline = pipeline.with_retriever(lambda name, kind: rt.retriever(name, kind).with_where(chosen))
    tty = sys.stdout.isatty()
    if as_json:
        _print_json(pipeline.ask(question, collection, mode, k, retriever).to_dict())
        return
    from rag.answer import Answer

    streamed: list[str] = []
    final: Answer | None = None
    generative = pipeline.mode_for(mode)[0] == "generative"
    for item in pipeline.stream(question, collection, mode, k, retriever):
        if isinstance(item, Answer):
            final = item
        elif generative:
            if not streamed:
                typer.echo("draft (not yet checked): ", nl=False)
            streamed.append(item)
            typer.echo(item, nl=False)
            sys.stdout.flush()
    if generative and streamed:
        typer.echo("")
    assert final is not None
    for line in render(final, tty, "".join(streamed) if generative and streamed else None):
        typer.echo(line)

def eval_qa(
    squad: Path = typer.Option(..., "--squad", help="SQuAD v1.1 JSON: its paragraphs become the corpus"),
    mode: str | None = typer.Option(None, "--mode", "-m", help="extractive | generative"),
    k: int = typer.Option(5, "-k", "--top-k", callback=k_between(1, 50), help="passages retrieved and read per question"),
    limit: int | None = typer.Option(None, "--limit", min=1, help="questions, evenly spaced through the file"),
    collection: str | None = typer.Option(None, "--collection", "-c", help="default: squad-FILESTEM"),
    retriever: str | None = typer.Option(None, "--retriever", help="dense | bm25 | hybrid"),
    out: Path | None = typer.Option(None, "--out", help="write every question's record as JSON lines"),
    report_file: Path | None = ReportOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Ingest a SQuAD file's paragraphs, ask its questions: top-k accuracy, EM/F1, citations, latency."""
    import json

    from indexes.errors import RagError
    from rag.evaluation.qa import evaluate_qa, spread
    from rag.evaluation.squad import read_squad

    rt = _runtime(answer_mode=mode)
    import re

    stem = squad.name.removesuffix(".gz").removesuffix(".json")
    name = collection or "squad-" + re.sub(r"[^A-Za-z0-9_-]+", "-", stem.removeprefix("squad-"))
    target = rt.writable_collection(name)
    report = rt.ingestor(target, show_progress=not as_json).ingest_paths([str(squad)], prune=True)
    if report.errors:
        raise RagError(f"could not ingest {squad}: {report.errors[0]['error']}")
    questions = spread(read_squad(squad), limit)
    pipeline = rt.ask_pipeline()
    chosen = mode or pipeline.default_mode
    from ingest.progress import progress_bar

    bar = progress_bar(len(questions), "question", "asking", enabled=not as_json)
    try:
        result, records = evaluate_qa(
            lambda q: pipeline.ask(q, name, chosen, k, retriever), questions, k, progress=bar.update
        )
    finally:
        bar.close()
    result = {"collection": name, "mode": chosen, **result}
    if out:
        with out.open("w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record.to_dict(), ensure_ascii=False) + "\n")
    if report_file is not None:
        from rag.evaluation.report import answer_report, qa_answer_records, write_report

        page = answer_report(qa_answer_records(records), result, f"Question answering: {name} ({chosen})")
        kept = write_report(page, report_file, rt.settings.home, name)
        if not as_json:
            typer.echo(f"report: {report_file} (served as /v1/reports/{kept.name})", err=True)
    if as_json:
        _print_json(result)
        return
    line = (
        f"{name} ({chosen}, {result['questions']} questions, k={k}): top-{k} accuracy {result[f'top{k}_accuracy']:.3f}  "
        f"EM {result['exact_match']:.1f}  F1 {result['f1']:.1f}  answered {result['answered_rate']:.3f}"
    )
    if chosen == "generative":
        precision = result["citation_precision"]
        line += (
            f"  citation precision {precision:.3f}" if precision is not None else "  citation precision n/a"
        ) + f"  verified answers {result['verified_answer_rate']:.3f}"
    typer.echo(line + f"  p50 {result['latency_p50_ms']:.0f} ms  p95 {result['latency_p95_ms']:.0f} ms")

def eval_grounding(
    squad: Path = typer.Option(..., "--squad", help="SQuAD v1.1 JSON: its paragraphs, minus a removed sample, become the corpus"),
    mode: str | None = typer.Option(None, "--mode", "-m", help="extractive | generative"),
    k: int = typer.Option(5, "-k", "--top-k", callback=k_between(1, 50), help="passages retrieved and read per question"),
    remove: int = typer.Option(100, "--remove", min=0, help="gold paragraphs removed from the corpus (their questions become unanswerable)"),
    seed: int = typer.Option(0, "--seed", help="seed of the removed sample"),
    articles: int | None = typer.Option(None, "--articles", min=1, help="use only the first N articles of the file"),
    limit: int | None = typer.Option(None, "--limit", min=0, help="answerable and unanswerable questions asked, each (evenly spread)"),
    limit_answerable: int | None = typer.Option(None, "--limit-answerable", min=0, help="answerable questions asked [default: --limit]"),
    calibrate_articles: int | None = typer.Option(
        None, "--calibrate-articles", min=1, help="extractive: choose the threshold on the first N articles' questions, score the rest at it"
    ),
    collection: str | None = typer.Option(None, "--collection", "-c", help="default: grounding-FILESTEM-SEED-REMOVE"),
    retriever: str | None = typer.Option(None, "--retriever", help="dense | bm25 | hybrid"),
    from_article: int = typer.Option(
        1, "--from-article", min=1, help="ask only questions of article N and later (held-out articles, e.g. 13); the corpus stays whole"
    ),
    records_file: Path | None = typer.Option(None, "--records", help="write each question's record as JSON lines as it is asked"),
    report_file: Path | None = ReportOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Abstention on unanswerable questions, EM/F1 on answerable ones, CRAG score, verified-citation precision."""
    import json
    import re

    from indexes.errors import RagError
    from rag.evaluation.grounding import (
        build_grounding_set,
        calibrate_on_articles,
        evaluate_grounding,
        threshold_curve,
        write_corpus,
    )

    rt = _runtime(answer_mode=mode)
    data = build_grounding_set(squad, remove, seed, articles)
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", squad.name.removesuffix(".gz").removesuffix(".json").removeprefix("squad-"))
    name = collection or f"grounding-{stem}-{articles or 'all'}-{seed}-{remove}"
    corpus = write_corpus(data, rt.settings.home / "grounding", name)
    target = rt.writable_collection(name)
    report = rt.ingestor(target, show_progress=not as_json).ingest_paths([str(corpus)], prune=True)
    if report.errors:
        raise RagError(f"could not ingest {corpus}: {report.errors[0]['error']}")
    pipeline = rt.ask_pipeline()
    chosen = mode or pipeline.default_mode
    from ingest.progress import progress_bar

    answerable = limit_answerable if limit_answerable is not None else limit
    n_answerable = sum(q.article >= from_article - 1 for q in data.answerable)
    n_unanswerable = sum(q.article >= from_article - 1 for q in data.unanswerable)
    asked = min(n_answerable if answerable is None else answerable, n_answerable) + min(n_unanswerable if limit is None else limit, n_unanswerable)
    bar = progress_bar(asked, "question", "asking", enabled=not as_json)
    sink = records_file.open("w", encoding="utf-8") if records_file is not None else None

    def keep(record: Any) -> None:
        if sink is not None:
            sink.write(json.dumps(record.to_dict(), ensure_ascii=False) + "\n")
            sink.flush()

    try:
        result, records = evaluate_grounding(
            lambda q: pipeline.ask(q, name, chosen, k, retriever), data, answerable, limit, progress=bar.update,
            first_article=from_article - 1, on_record=keep,
        )
    finally:
        bar.close()
        if sink is not None:
            sink.close()
    rows = [r.to_dict() for r in records]
    settings = rt.settings
    summary: dict[str, Any] = {
        "collection": name,
        "mode": chosen,
        "k": k,
        "removed_paragraphs": data.removed_paragraphs,
        "dropped_questions": data.dropped_questions,
        **result,
    }
    if chosen == "extractive":
        summary["reader"] = settings.reader_model
        summary["abstention"] = settings.reader_abstention
        reader = rt.reader()
        summary["threshold"] = reader.threshold  # None when abstention is off
        key = reader.evidence
        summary["curve"] = threshold_curve(rows, THRESHOLD_GRID, key, reader.retrieval_weight)
        if calibrate_articles:
            try:
                summary["calibration"] = calibrate_on_articles(rows, calibrate_articles, THRESHOLD_GRID, key, WEIGHT_GRID)
            except RagError as exc:  # the answers are recorded: report them, and say why there is no calibration
                summary["calibration_error"] = str(exc)
                typer.echo(f"warning: no calibration: {exc}", err=True)
    else:
        summary["verifier"] = pipeline.verifier.name  # what `auto` resolved to
        summary["verifier_setting"] = settings.verifier
    if report_file is not None:
        from rag.evaluation.report import answer_report, write_report

        kept = write_report(answer_report(rows, summary, f"Grounding: {name} ({chosen})"), report_file, settings.home, name)
        if not as_json:
            typer.echo(f"report: {report_file} (served as /v1/reports/{kept.name})", err=True)
    if as_json:
        _print_json({**summary, "records": rows})
        return
    typer.echo(f"{name} ({chosen}, k={k}): {result['answerable']} answerable, {result['unanswerable']} unanswerable questions")
    for key in (
        "abstention_unanswerable", "answered_answerable", "em_answerable", "f1_answerable", "em_answered",
        "crag_score", "verified_citations", "verified_citation_precision", "unanswerable_with_verified_sentence",
        "answerable_with_verified_citation", "answerable_with_correct_verified_citation", "reader_span_fallbacks", "latency_p50_ms",
    ):
        typer.echo(f"  {key:<38} {summary[key]}")
    _print_curve(summary)

def _print_curve(summary: dict[str, Any]) -> None:
    if "curve" in summary:
        typer.echo("  threshold  abstain(unans)  answered(ans)  EM(ans)  EM(answered)  CRAG")
        for row in summary["curve"]:
            typer.echo(
                f"  {row['threshold']:>9}  {row['abstention_unanswerable']!s:>14}  {row['answered_answerable']!s:>13}"
                f"  {row['em_answerable']!s:>7}  {row['em_answered']!s:>12}  {row['crag_score']!s:>5}"
            )
    if "calibration" in summary:
        c = summary["calibration"]
        typer.echo(
            f"  calibrated on articles < {c['calibration_articles']} ({c['calibration_questions']} questions; threshold and "
            f"retrieval weight maximising min(abstain, answered), then CRAG): threshold {c['chosen']['threshold']}, "
            f"weight {c['chosen']['retrieval_weight']}; calibration {c['chosen']}; held out ({c['held_out_questions']} "
            f"questions): {c['held_out']}"
        )

def eval_grounding_replay(
    records_file: Path = typer.Argument(..., help="`rag eval grounding --mode extractive --json` output, or its records as JSON lines"),
    calibrate_articles: int = typer.Option(12, "--calibrate-articles", min=1, help="choose on the first N articles' questions, score the rest"),
    key: str = typer.Option("margin", "--key", help="margin (abstention=null) | span_logit (abstention=span)"),
    weight: float | None = typer.Option(None, "--retrieval-weight", help="curve at this weight [default: the calibrated one]"),
    as_json: bool = JsonOpt,
) -> None:
    """Replay recorded extractive answers under the reader's rule at every threshold and retrieval
    weight: calibrate on some articles, evaluate on the others, without asking again."""
    from rag.evaluation.grounding import calibrate_on_articles, read_records, threshold_curve

    rows = read_records(records_file)
    calibration = calibrate_on_articles(rows, calibrate_articles, THRESHOLD_GRID, key, WEIGHT_GRID)
    chosen_weight = calibration["chosen"]["retrieval_weight"] if weight is None else weight
    summary = {
        "records": str(records_file),
        "questions": len(rows),
        "calibration": calibration,
        "curve": threshold_curve(rows, THRESHOLD_GRID, key, chosen_weight),
        "held_out_curve": threshold_curve([r for r in rows if r["article"] >= calibrate_articles], THRESHOLD_GRID, key, chosen_weight),
    }
    if as_json:
        _print_json(summary)
        return
    typer.echo(f"{records_file}: {len(rows)} questions; all of them at retrieval weight {chosen_weight}:")
    _print_curve({"curve": summary["curve"], "calibration": calibration})

def eval_guided_gate(
    records_file: Path = typer.Argument(..., help="`rag eval grounding --mode extractive --records FILE` output (JSON lines with passages)"),
    verifier: list[str] | None = typer.Option(None, "--verifier", help="nli | lexical | reader (repeatable; default: nli)"),
    from_article: int = typer.Option(1, "--from-article", min=1, help="only questions of article N and later (as rag eval grounding)"),
    as_json: bool = JsonOpt,
) -> None:
    """Replay the reader-guided gate on extractive records: how many answerable questions a guided
    generative answer can answer (the reader answered and the check verifies "question + span." in
    its passage), and how many unanswerable ones it would answer, with and without the lexical
    second chance, without generating anything."""
    from indexes.errors import InvalidInput
    from rag.evaluation.grounding import guided_gate, read_records

    rows = [r for r in read_records(records_file) if r["article"] >= from_article - 1]
    if not rows or any("passages" not in r or "cited" not in r for r in rows):
        raise InvalidInput(f"{records_file}: records need 'passages' and 'cited' (written by rag eval grounding --records since this release)")
    rt = _runtime()
    results = []
    for v in _verifiers(rt, verifier or ["nli"]):
        for fallback in (False, True):
            results.append({"verifier": v.name, "lexical_fallback": fallback, **guided_gate(rows, v, lexical_fallback=fallback)})
    if as_json:
        _print_json({"records": str(records_file), "questions": len(rows), "results": results})
        return
    for r in results:
        typer.echo(
            f"{r['verifier']:<8} lexical second chance {'on ' if r['lexical_fallback'] else 'off'}: answerable answered {r['answered_rate']} "
            f"(correct {r['answered_correct_rate']}), unanswerable verified {r['unanswerable_verified_rate']}, "
            f"citation precision {r['citation_precision']}"
        )


def eval_verifiers(
    cases: Path = typer.Option(Path("examples/verifier-cases.jsonl"), "--cases", help="labelled (question, answer, passage) cases, JSON lines"),
    verifier: list[str] | None = typer.Option(None, "--verifier", help="lexical | reader | nli | nli-unguarded (repeatable; default: all that load)"),
    sets: str | None = typer.Option(
        None, "--set", help="verification sets built from --data instead of --cases: squad,scifact,written (comma-separated)"
    ),
    part: str = typer.Option("test", "--part", callback=_one_of("design", "test", "all"), help="design | test | all (with --set)"),
    per_kind: int | None = typer.Option(250, "--per-kind", min=1, help="pairs per source and kind (with --set), chosen by a hash of the id"),
    data: Path = typer.Option(Path("../shared/data"), "--data", help="folder holding squad/ and beir/scifact/ (with --set)"),
    write_calibration: Path | None = typer.Option(
        None, "--write-calibration", help="with --set --part design: choose the judge's threshold and guards and write them here"
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Accuracy of each support verifier on labelled cases, with the cases it gets wrong; with
    --set, the judge's precision/recall curve and each guard's effect on a verification set."""
    rt = _runtime()
    if sets is not None:
        _eval_verification_set(rt, sets, part, per_kind, data, verifier, write_calibration, as_json)
        return
    from rag.evaluation.verifiers import evaluate_verifier, read_cases

    labelled = read_cases(cases)
    results = [evaluate_verifier(v, labelled) for v in _verifiers(rt, verifier or ["lexical", "reader", "nli", "nli-unguarded"])]
    if as_json:
        _print_json({"cases": str(cases), "results": results})
        return
    for r in results:
        typer.echo(
            f"{r['verifier']:<14} accuracy {r['accuracy']:.3f} ({r['cases']} cases)  "
            f"false positives: {', '.join(r['false_positives']) or '-'}  false negatives: {', '.join(r['false_negatives']) or '-'}"
        )

def _verifiers(rt: Any, names: list[str]) -> list[Any]:
    """The verifiers named, built as `rag ask` builds them (resolved device, the settings'
    thresholds, the calibrated judge); a judge without RAG_VERIFIER_MODEL is skipped with a note."""
    from rag.verifiers import LexicalVerifier, build_verifier

    s = rt.settings
    out: list[Any] = []
    for name in names:
        if name == "lexical":
            out.append(LexicalVerifier(s.support_threshold))
        elif name == "reader":
            from rag.verifiers.reader import ReaderVerifier

            out.append(ReaderVerifier(rt.reader(), threshold=s.support_threshold))
        elif name in ("nli", "nli-unguarded"):
            if not s.verifier_model:
                typer.echo(f"{name}: skipped (set RAG_VERIFIER_MODEL)", err=True)
                continue
            judge: Any = build_verifier(s.model_copy(update={"verifier": "nli"}), rt.reader, rt.device)
            if name == "nli-unguarded":
                judge.guards, judge.name = (), "nli-unguarded"
            out.append(judge)
        else:
            raise typer.BadParameter(f"unknown verifier {name!r}")
    return out

def _eval_verification_set(
    rt: Any, sets: str, part: str, per_kind: int | None, data: Path, names: list[str] | None, write_calibration: Path | None, as_json: bool
) -> None:
    import json

    from indexes.errors import InvalidInput
    from rag.evaluation.verification_sets import build_set
    from rag.evaluation.verifiers import (
        THRESHOLDS,
        by_kind,
        choose_guards,
        choose_threshold,
        guard_effects,
        judge_cases,
        rates,
        verdicts,
    )
    from rag.verifiers.judge import GUARDS

    s = rt.settings
    if not s.verifier_model:
        raise InvalidInput("--set measures the support judge: set RAG_VERIFIER_MODEL (e.g. ../shared/models/verifier-minilm-l6-support)")
    if write_calibration is not None and part != "design":
        raise InvalidInput("--write-calibration chooses on the design part only: add --part design")
    labelled = build_set(data, [x.strip() for x in sets.split(",") if x.strip()], part, per_kind)  # type: ignore[arg-type]
    judge = _verifiers(rt, ["nli"])[0]
    judged = judge_cases(judge.probabilities, labelled)
    if write_calibration is not None:
        bare = choose_threshold(judged, frozenset())
        kept = choose_guards(judged, bare, GUARDS)
        threshold = choose_threshold(judged, frozenset(kept))
    else:
        threshold, kept = judge.threshold, list(judge.guards)
    summary: dict[str, Any] = {
        "sets": sets,
        "part": part,
        "per_kind": per_kind,
        "cases": len(labelled),
        "model": s.verifier_model,
        "threshold": threshold,
        "guards": kept,
        "judge": rates(judged, threshold, frozenset(kept)),
        "judge_unguarded": rates(judged, threshold, frozenset()),
        "judge_all_guards": rates(judged, threshold, frozenset(GUARDS)),
        "curve": [{"threshold": t, **rates(judged, t, frozenset(kept))} for t in THRESHOLDS],
        "curve_unguarded": [{"threshold": t, **rates(judged, t, frozenset())} for t in THRESHOLDS],
        "guard_effects": guard_effects(judged, threshold, kept, GUARDS),
        "by_kind": by_kind(judged, threshold, frozenset(kept)),
    }
    others = [n for n in names or [] if n not in ("nli", "nli-unguarded")]
    summary["others"] = [verdicts(v, labelled) for v in _verifiers(rt, others)]
    if write_calibration is not None:
        from pathlib import Path as _Path

        record = {
            "model": _Path(s.verifier_model.rstrip("/")).name,
            "threshold": threshold,
            "guards": kept,
            "chosen_on": f"rag eval verifiers --set {sets} --part design --per-kind {per_kind} ({len(labelled)} pairs)",
            "rule": "threshold: most supported pairs verified with at most 3% of unsupported ones verified; "
            "guards: each alone on the bare judge at that threshold, kept when it prevents more false accepts than it loses supported pairs",
            "design": summary["judge"],
        }
        write_calibration.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    if as_json:
        _print_json(summary)
        return
    j = summary["judge"]
    typer.echo(
        f"judge {s.verifier_model} on {sets} ({part}, {len(labelled)} pairs: {j['supported']} supported, {j['unsupported']} unsupported)"
    )
    typer.echo(f"  threshold {threshold}, guards {', '.join(kept) or 'none'}: supported verified {j['supported_verified']}, "
               f"unsupported verified {j['unsupported_verified']}, precision {j['precision']}")
    for label in ("judge_unguarded", "judge_all_guards"):
        r = summary[label]
        typer.echo(f"  {label:<18} supported verified {r['supported_verified']}  unsupported verified {r['unsupported_verified']}")
    typer.echo("  curve (kept guards):  threshold  supported verified  unsupported verified  precision")
    for row in summary["curve"]:
        typer.echo(f"  {row['threshold']:>28}  {row['supported_verified']!s:>18}  {row['unsupported_verified']!s:>20}  {row['precision']!s:>9}")
    typer.echo("  guard            kept  recall lost  false accepts prevented")
    for e in summary["guard_effects"]:
        typer.echo(f"  {e['guard']:<15} {e['kept']!s:>5}  {e['recall_lost']:>11}  {e['false_accepts_prevented']:>23}")
    for key, row in summary["by_kind"].items():
        typer.echo(f"  {key:<30} {'supported' if row['label'] else 'unsupported':<11} {row['cases']:>5} cases, verified {row['verified']}")
    for r in summary["others"]:
        typer.echo(f"  {r['verifier']:<10} supported verified {r['supported_verified']}  unsupported verified {r['unsupported_verified']}")
    if write_calibration is not None:
        typer.echo(f"calibration written to {write_calibration}", err=True)


def register(app: typer.Typer, eval_app: typer.Typer) -> None:
    """Attach this module's commands: `rag ask` and the `rag eval` commands that answer questions."""
    app.command()(ask)
    eval_app.command("qa")(eval_qa)
    eval_app.command("grounding")(eval_grounding)
    eval_app.command("grounding-replay")(eval_grounding_replay)
    eval_app.command("verifiers")(eval_verifiers)
    eval_app.command("guided-gate")(eval_guided_gate)
