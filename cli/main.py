"""The `rag` command line. Library errors become one-line messages and a non-zero exit code.

Exit codes: 0 success; 1 an error (nothing done, or every input of `ingest` failed); 2 a usage
error (a bad flag or value, one line on stderr); 3 `ingest` stored some inputs and reported others
as failed; 130 interrupted. Imports of torch, transformers and FAISS happen inside commands, so
`rag --help` is instant.
"""

from __future__ import annotations

import logging
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from cli.options import (  # noqa: F401 - re-exported: command modules import them from here too
    CollectionOpt,
    FusionOpt,
    JsonOpt,
    ReportOpt,
    RetrieverOpt,
    WhereOpt,
    _one_of,
    _print_json,
    k_between,
    text_argument,
    where_option,
)
from indexes.errors import InvalidConfig, RagError

if TYPE_CHECKING:
    from rag.runtime import Runtime

app = typer.Typer(
    help="Retrieval-augmented question answering: ingest corpora, search them, evaluate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
eval_app = typer.Typer(help="Evaluate against labelled data.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")



class _State:
    overrides: dict[str, Any] = {}


@app.callback()
def _global(
    home: Path | None = typer.Option(None, "--home", help="data home [env RAG_HOME]"),
    database_url: str | None = typer.Option(None, "--database-url", help="SQLAlchemy URL [env RAG_DATABASE_URL]"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="log progress details"),
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    _State.overrides = {"home": home, "database_url": database_url}


def _runtime(**overrides: Any) -> Runtime:
    from rag.runtime import Runtime
    from rag.settings import load_settings

    return Runtime(load_settings(**{**_State.overrides, **overrides}))


def _reading_runtime() -> Runtime:
    """The runtime of a read-only command: a data home that does not exist is an error (exit 2),
    never created by a command that only looks."""
    rt = _runtime()
    home = rt.settings.home.expanduser()
    if home.exists() and not home.is_dir():
        typer.echo(f"error: data home {home} cannot be used: it is a file, not a folder; set RAG_HOME to a writable folder", err=True)
        raise typer.Exit(EXIT_USAGE)
    if not home.is_dir():
        typer.echo(f"error: the data home {home} does not exist (set RAG_HOME or --home; `rag ingest PATH` creates one)", err=True)
        raise typer.Exit(EXIT_USAGE)
    return rt


EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3


def _metadata_option(values: list[str] | None) -> dict[str, Any]:
    from indexes.errors import InvalidInput
    from indexes.metadata import parse_pairs

    try:
        return parse_pairs(values or [])
    except InvalidInput as exc:
        raise typer.BadParameter(str(exc), param_hint="--metadata") from None





@app.command()
def ingest(
    paths: list[str] = typer.Argument(..., help="files, folders (recursive) or globs"),
    collection: str | None = CollectionOpt,
    model: str | None = typer.Option(None, "--model", help="embedding model for a new collection [env RAG_EMBEDDING_MODEL]"),
    chunk_tokens: int | None = typer.Option(None, "--chunk-tokens", min=8, max=8192, help="tokens per chunk for a new collection"),
    chunk_overlap: int | None = typer.Option(None, "--chunk-overlap", min=0, help="overlap in tokens for a new collection"),
    index: str | None = typer.Option(None, "--index", help="FAISS factory string for a new collection"),
    quantize: bool | None = typer.Option(None, "--quantize/--no-quantize", help="int8 encoder (CPU)"),
    prune: bool = typer.Option(True, "--prune/--no-prune", help="delete documents whose files vanished from a re-ingested folder"),
    ray: bool = typer.Option(False, "--ray", help="parse, chunk and embed on a Ray cluster [address: env RAG_RAY_ADDRESS, else auto]"),
    ray_address: str | None = typer.Option(None, "--ray-address", help="Ray cluster (implies --ray): auto, local or HOST:PORT"),
    metadata: list[str] | None = typer.Option(
        None, "--metadata", help="key=value added to every ingested document's metadata (repeatable; numbers, true/false typed)"
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Ingest files into a collection: unchanged files are skipped, changed ones replaced.

    Exit code 0 when every input was stored (or was unchanged), 3 when some failed and the others
    were stored, 1 when none could be stored."""
    rt = _runtime(
        embedding_model=model, chunk_tokens=chunk_tokens, chunk_overlap=chunk_overlap, index_factory=index, quantize=quantize,
        ray_address=ray_address,
    )
    extra = _metadata_option(metadata)
    if ray and not rt.settings.ray_address:
        rt.settings.ray_address = "auto"
    _refuse_folders_with_nothing_to_ingest(paths)
    if extra and rt.settings.ray_address:
        raise typer.BadParameter("--metadata is not supported with --ray yet", param_hint="--metadata")
    target = rt.writable_collection(collection)
    ingestor = rt.ingestor(target, show_progress=not as_json)
    ingestor.metadata = extra
    report = ingestor.ingest_paths(paths, prune=prune)
    if as_json:
        _print_json({"collection": target.name, **report.to_dict()})
    else:
        rate = report.chunks_added / report.embed_seconds if report.embed_seconds else 0.0
        typer.echo(
            f"{target.name}: {report.files_seen} files, {report.documents_added} documents added, "
            f"{report.documents_replaced} replaced, {report.documents_unchanged} unchanged, "
            f"{report.documents_deleted} deleted, {report.chunks_added} passages embedded "
            f"({rate:.0f} passages/s) in {report.seconds:.1f}s"
        )
        for error in report.errors:
            typer.echo(f"error: {printable(error['error'])}", err=True)
    raise typer.Exit(ingest_exit_code(report.errors, report.documents_added + report.documents_replaced + report.documents_unchanged))


def _refuse_folders_with_nothing_to_ingest(paths: list[str]) -> None:
    """Only folders given, and none holds a supported file: a usage error (exit 2), before any
    collection is created or pruned (a typo'd folder must not empty a collection)."""
    from ingest.loaders import SUPPORTED
    from ingest.pipeline import discover

    files, folders, errors = discover(paths)
    if folders and not files and not errors:
        names = ", ".join(str(f) for f in folders)
        raise typer.BadParameter(
            f"{names}: no supported file ({' '.join(SUPPORTED)}); nothing was ingested or pruned", param_hint="PATHS"
        )


def printable(text: str) -> str:
    """Control characters escaped (a newline in a file name prints as \\n): one message stays one
    line, and a name cannot forge another line of output."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def ingest_exit_code(errors: list[dict[str, str]], documents_ok: int) -> int:
    """0 all inputs stored, 3 some failed and some stored, 1 none stored."""
    if not errors:
        return 0
    return EXIT_PARTIAL if documents_ok else EXIT_ERROR


@app.command()
def search(
    query: str = typer.Argument(..., callback=text_argument, help="the question or keywords"),
    collection: str | None = CollectionOpt,
    k: int = typer.Option(10, "-k", "--top-k", help="passages to return [1 to RAG_MAX_K]"),
    retriever: str | None = RetrieverOpt,
    fusion: str | None = FusionOpt,
    nprobe: int | None = typer.Option(None, "--nprobe", min=1, help="IVF lists to search [default: the collection's, else tuned per segment]"),
    ef_search: int | None = typer.Option(None, "--ef-search", min=1, help="HNSW candidate list [default: the collection's, else 64]"),
    where: list[str] | None = WhereOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Print the passages most similar to QUERY (among documents matching --where)."""
    chosen = where_option(where)
    rt = _runtime(retriever=retriever, fusion=fusion, nprobe=nprobe, ef_search=ef_search)
    k_between(1, rt.settings.max_k)(k)  # the bound is a setting: a usage error once it is read
    found = rt.retriever(collection)
    passages = (found.with_where(chosen) if chosen else found).retrieve(query, k)
    if as_json:
        _print_json([p.to_dict() for p in passages])
        return
    if not passages:
        typer.echo("no passages (nothing matches the filter)" if chosen else "no passages (the collection is empty)")
    for p in passages:
        title = p.title or Path(p.source).name
        typer.echo(f"{p.rank:>2}. {p.score:.4f}  {printable(title)} — {printable(p.source)}:{p.start}-{p.end}  (doc {p.doc_id}, chunk {p.chunk_id})")
        typer.echo(textwrap.indent(textwrap.shorten(p.text, 300, placeholder=" …"), "    "))


collections_app = typer.Typer(help="List collections, or delete one whole.", invoke_without_command=True)
app.add_typer(collections_app, name="collections")


@collections_app.callback()
def collections(ctx: typer.Context, as_json: bool = JsonOpt) -> None:
    """List collections; one whose stored config no longer loads is listed as unusable."""
    if ctx.invoked_subcommand is not None:
        return
    rt = _reading_runtime()
    names = rt.store.collection_names()
    broken = rt.store.broken()
    if as_json:
        _print_json(
            [rt.store.collection(n).stats() for n in names]
            + [{"collection": n, "unusable": reason} for n, reason in broken.items()]
        )
        return
    if not names and not broken:
        typer.echo("no collections yet: rag ingest PATH")
    for name in names:
        s = rt.store.collection(name).stats()
        typer.echo(f"{name}: {s['documents']} documents, {s['chunks']} chunks, {s['encoder']['model']}")
    for name, reason in broken.items():
        typer.echo(f"{name}: unusable ({reason}); remove it with: rag collections delete {name}")


@collections_app.command("delete")
def collections_delete(name: str = typer.Argument(..., help="collection to delete whole"), as_json: bool = JsonOpt) -> None:
    """Delete a collection whole: documents, chunks, runs and index files."""
    _runtime().store.drop_collection(name)
    if as_json:
        _print_json({"collection": name, "deleted": True})
    else:
        typer.echo(f"{name}: deleted")


@app.command()
def stats(collection: str | None = CollectionOpt, as_json: bool = JsonOpt) -> None:
    """Documents, chunks and vectors counted from SQL and from FAISS."""
    info = _runtime().collection(collection).stats()
    if as_json:
        _print_json(info)
        return
    for key in ("collection", "documents", "chunks", "vectors", "index_factory", "dim", "index_bytes", "generation"):
        typer.echo(f"{key:>14}: {info[key]}")
    typer.echo(f"{'segments':>14}: {len(info['segments'])} ({', '.join(info['segment_factories']) or 'none'})")
    typer.echo(f"{'encoder':>14}: {info['encoder']['model']} ({info['encoder']['pooling']} pooling, normalize={info['encoder']['normalize']})")


@app.command()
def delete(
    sources: list[str] = typer.Argument(None, help="source paths (or record sources such as file.jsonl#id)"),
    ids: list[int] = typer.Option([], "--id", help="internal document id (repeatable)"),
    external_ids: list[str] = typer.Option([], "--external-id", help="external id from the input, e.g. a BEIR _id (repeatable)"),
    collection: str | None = CollectionOpt,
    every: bool = typer.Option(False, "--all", help="delete every document a reference matches (an external id may repeat across files)"),
    as_json: bool = JsonOpt,
) -> None:
    """Remove documents from SQL and the indexes together; each reference says what it is."""
    target = _runtime().collection(collection)
    refs = [(s, "source") for s in sources or []] + [(i, "id") for i in ids] + [(e, "external_id") for e in external_ids]
    if not refs:
        raise RagError("name documents to delete: SOURCE..., --id N or --external-id X")
    with target.writer():
        found_ids: set[int] = set()
        for ref, kind in refs:
            matched = target.find_documents(ref, by=kind)  # type: ignore[arg-type]
            if len(matched) > 1 and not every:
                named = ", ".join(f"{source} (id {i})" for i, source in sorted(target.sources_of(matched).items()))
                hint = {"external_id": "--external-id", "source": "SOURCE"}.get(kind, "--id")
                raise typer.BadParameter(f"{ref!r} matches {len(matched)} documents: {named}; name one by --id, or add --all", param_hint=hint)
            found_ids.update(matched)
        found = sorted(found_ids)
        result = target.delete(found)
    if as_json:
        _print_json({"collection": target.name, "deleted": result["deleted"], "document_ids": found})
    else:
        typer.echo(f"{target.name}: deleted {result['deleted']} documents")


@app.command()
def doctor(
    collection: str | None = CollectionOpt,
    repair: bool = typer.Option(True, "--repair/--check-only", help="fix drift (re-embed missing vectors); --check-only reads and changes nothing"),
    runtime: bool = typer.Option(False, "--runtime", help="print the encoder runtime RAG_ENCODER_RUNTIME resolves to, the CPU flags and why, and exit"),
    as_json: bool = JsonOpt,
) -> None:
    """Check that SQL and FAISS agree; exit 0 only when they do."""
    if runtime:
        rt = _runtime()
        from api.batching import SEARCH_BATCH_WORKERS
        from indexes.encoder import cpu_flags, explain_runtime, serving_runtime

        s = rt.settings
        choice = explain_runtime(s.encoder_runtime, rt.device, s.quantize)
        served, per_call = serving_runtime(s.encoder_runtime, rt.device, s.quantize, s.encoder_call_threads, SEARCH_BATCH_WORKERS)
        flags = cpu_flags()
        requested = s.encoder_runtime
        serve = {"runtime": served.runtime, "int8": served.quantize, "threads_per_call": per_call, "reason": served.reason}
        info = {
            "requested": requested, "runtime": choice.runtime, "int8": choice.quantize, "device": rt.device, "cpu_flags": flags,
            "reason": choice.reason, "serve": serve,
        }
        if as_json:
            _print_json(info)
        else:
            typer.echo(f"encoder runtime: {choice.runtime}{' int8' if choice.quantize else ''} on {rt.device} (RAG_ENCODER_RUNTIME={requested})")
            typer.echo("cpu flags: " + " ".join(f"{k}={'yes' if v else 'no'}" for k, v in flags.items()))
            typer.echo(f"reason: {choice.reason}")
            if per_call is not None:
                typer.echo(f"rag serve (batched searches): {served.runtime}, {per_call} thread(s) a call: {served.reason}")
        return
    rt = _reading_runtime()  # nothing to check or repair in a home that does not exist
    target = rt.collection(collection)
    before = target.check()
    after = before
    dead = _runs_of_dead_processes(target)
    if repair and not before.consistent:
        encoder = rt.encoder_for(target)
        with target.writer():
            after = target.repair(lambda texts: encoder.encode(texts, kind="passage"))
    elif repair and dead:
        with target.writer(timeout=0):  # taking the lock marks runs left running interrupted
            pass
    if as_json:
        _print_json({"collection": target.name, "before": before.to_dict(), "after": after.to_dict(), "dead_runs": dead})
    else:
        b = before.to_dict()
        typer.echo(
            f"{target.name}: generation {b['generation']}, {b['sql_chunks']} chunks in SQL, {b['faiss_vectors']} vectors "
            f"and {b['keyword_chunks']} keyword entries for them, {b['tombstones']} tombstones, "
            f"{b['unpublished_documents']} unpublished documents"
        )
        for problem in before.problems():
            typer.echo(f"problem: {problem}")
        if dead:
            fate = "marked interrupted" if repair else "rag doctor without --check-only marks them interrupted"
            typer.echo(f"runs left running by a process that died: {', '.join(map(str, dead))} ({fate})")
        if after is not before:
            typer.echo("repaired: consistent" if after.consistent else f"still inconsistent: {after.to_dict()}")
        elif before.consistent:
            typer.echo("consistent")
    if not after.consistent:
        raise typer.Exit(1)


def _runs_of_dead_processes(target: Any) -> list[int]:
    """Ids of runs still marked running while no process holds the collection's writer lock: a run
    is running only while its process holds that lock, so their process died (kill -9, power)."""
    from sqlalchemy import select

    from indexes.locking import WriterBusy, WriterLock
    from indexes.schema import RunRow

    with target.store.sessions() as session:
        running = list(
            session.scalars(select(RunRow.id).where(RunRow.collection_id == target.id, RunRow.status == "running"))
        )
    if not running:
        return []
    lock = WriterLock(target.store.engine, target.id, target.name)
    try:
        lock.acquire(timeout=0)
    except WriterBusy:
        return []  # a writer is at work: its run is alive
    lock.release()
    return running


@eval_app.command("retrieval")
def eval_retrieval(
    beir: Path = typer.Option(..., "--beir", help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv"),
    split: str = typer.Option("test", "--split"),
    collection: str | None = typer.Option(None, "--collection", "-c", help="default: beir-FOLDERNAME"),
    retriever: str | None = RetrieverOpt,
    fusion: str | None = FusionOpt,
    report_file: Path | None = ReportOpt,
    compare: str | None = typer.Option(
        None, "--compare", help="with --report: more retrievers to draw, comma-separated (e.g. dense,bm25)"
    ),
    where: list[str] | None = WhereOpt,
    as_json: bool = JsonOpt,
) -> None:
    """nDCG@10, Recall@100, MRR@10 and latency; ingests the corpus first if needed. With --where,
    retrieval searches only matching documents (relevant documents outside it count as missed)."""
    from rag.evaluation.retrieval import read_beir, run_queries, score_run

    chosen = where_option(where)

    kinds = [k.strip() for k in (compare or "").split(",") if k.strip()]
    for kind in kinds:
        if kind not in ("dense", "bm25", "hybrid"):
            raise typer.BadParameter(f"{kind!r} is not one of dense, bm25, hybrid", param_hint="--compare")
    data = read_beir(beir, split)
    name = collection or f"beir-{beir.resolve().name}"
    rt = _runtime(retriever=retriever, fusion=fusion)
    target = rt.writable_collection(name)
    report = rt.ingestor(target, show_progress=not as_json).ingest_paths([str(data.corpus)], prune=True)
    if report.errors:
        raise RagError(f"could not ingest {data.corpus}: {report.errors[0]['error']}")
    result = {
        "collection": name,
        "split": split,
        "retriever": rt.settings.retriever,
        **({"fusion": rt.settings.fusion} if rt.settings.retriever == "hybrid" else {}),
    }
    searched = rt.retriever(name)
    if chosen:
        searched = searched.with_where(chosen)
        result["where"] = chosen.to_dict()
    main_run = run_queries(searched, data)
    result.update(score_run(data, main_run))
    if report_file is not None:
        kept = _retrieval_report(rt, name, data, result, main_run, kinds, report_file)
        if not as_json:
            typer.echo(f"report: {report_file} (served as /v1/reports/{kept.name})", err=True)
    if as_json:
        _print_json(result)
    else:
        typer.echo(
            f"{name} ({split}, {result['retriever']}, {result['queries']} queries): nDCG@10 {result['ndcg@10']:.4f}  "
            f"Recall@100 {result['recall@100']:.4f}  MRR@10 {result['mrr@10']:.4f}  "
            f"p50 {result['latency_p50_ms']:.1f} ms  p95 {result['latency_p95_ms']:.1f} ms"
        )


def _retrieval_report(
    rt: Runtime, name: str, data: Any, result: dict[str, Any], main_run: Any, kinds: list[str], path: Path
) -> Path:
    from rag.evaluation.report import retrieval_report, write_report
    from rag.evaluation.retrieval import report_result, run_queries

    label = result["retriever"] + (f" ({result['fusion']})" if "fusion" in result else "")
    results = [report_result(label, data, main_run)]
    for kind in kinds:
        if kind != result["retriever"]:
            results.append(report_result(kind, data, run_queries(rt.retriever(name, kind), data)))
    summary = {k: v for k, v in result.items() if k not in ("retriever", "fusion")}
    page = retrieval_report(results, summary, f"Retrieval: {name} ({result['split']})")
    return write_report(page, path, rt.settings.home, name)


# Commands that live in their own modules: each module defines `register(app, eval_app)` and
# imports nothing heavy at module level. Add a module by appending its name here.
COMMAND_MODULES: list[str] = ["cli.serve", "cli.answers", "cli.reader", "cli.models", "cli.mcp", "cli.documents"]


def _register_command_modules() -> None:
    import importlib

    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(app, eval_app)


_register_command_modules()


def main() -> None:
    from pydantic import ValidationError

    try:  # typer >= 0.22 carries its own copy of click
        from typer._click.exceptions import NoArgsIsHelpError, UsageError
    except ImportError:
        from click.exceptions import NoArgsIsHelpError, UsageError  # type: ignore[assignment]

    try:
        code = typer.main.get_command(app).main(standalone_mode=False)
    except NoArgsIsHelpError as exc:
        typer.echo(exc.ctx.get_help() if exc.ctx else str(exc), err=True)
        sys.exit(EXIT_USAGE)
    except UsageError as exc:
        command = exc.ctx.command_path if exc.ctx else "rag"
        typer.echo(f"error: {exc.format_message()} (see: {command} --help)", err=True)
        sys.exit(EXIT_USAGE)
    except ValidationError as exc:  # a setting from a flag, RAG_* or rag.toml out of its range
        typer.echo(f"error: {settings_message(exc)}", err=True)
        sys.exit(EXIT_USAGE)
    except InvalidConfig as exc:  # a setting that cannot work: a usage error, like a bad flag
        typer.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except RagError as exc:
        typer.echo(f"error: {printable(str(exc))}", err=True)
        sys.exit(EXIT_ERROR)
    except (KeyboardInterrupt, typer.Abort):
        code = 130
    if code == 130:  # typer turns Ctrl-C into Exit(130) before it reaches us
        typer.echo("interrupted; what was fully written is kept", err=True)
    sys.exit(code if isinstance(code, int) else 0)


def settings_message(exc: Any) -> str:
    """A pydantic ValidationError of `Settings` on one line: which setting, what is wrong."""
    parts = []
    for err in exc.errors()[:3]:
        name = ".".join(str(x) for x in err.get("loc", ())) or "settings"
        parts.append(f"{name} (RAG_{name.upper()}) = {err.get('input')!r}: {err.get('msg', 'invalid')}")
    return "invalid setting " + "; ".join(parts)


if __name__ == "__main__":
    main()
