"""The `rag` command line. Library errors become one-line messages and a non-zero exit code.

Imports of torch, transformers and FAISS happen inside commands, so `rag --help` is instant.
"""

from __future__ import annotations

import json
import logging
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from indexes.errors import RagError

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

CollectionOpt = typer.Option(None, "--collection", "-c", help="collection name [default: RAG_COLLECTION or 'default']")
JsonOpt = typer.Option(False, "--json", help="print JSON instead of text")
def _one_of(*choices: str) -> Any:
    def check(value: Optional[str]) -> Optional[str]:
        if value is not None and value not in choices:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(choices)}")
        return value

    return check


RetrieverOpt = typer.Option(
    None, "--retriever", callback=_one_of("dense", "bm25", "hybrid"), help="dense, bm25 or hybrid [env RAG_RETRIEVER; default hybrid]"
)
FusionOpt = typer.Option(
    None, "--fusion", callback=_one_of("rrf", "convex"), help="hybrid fusion: rrf or convex [env RAG_FUSION; default convex]"
)


class _State:
    overrides: dict[str, Any] = {}


@app.callback()
def _global(
    home: Optional[Path] = typer.Option(None, "--home", help="data home [env RAG_HOME]"),
    database_url: Optional[str] = typer.Option(None, "--database-url", help="SQLAlchemy URL [env RAG_DATABASE_URL]"),
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


def _print_json(payload: Any) -> None:
    typer.echo(json.dumps(payload, indent=2, ensure_ascii=False, default=str))


@app.command()
def ingest(
    paths: list[str] = typer.Argument(..., help="files, folders (recursive) or globs"),
    collection: Optional[str] = CollectionOpt,
    model: Optional[str] = typer.Option(None, "--model", help="embedding model for a new collection [env RAG_EMBEDDING_MODEL]"),
    chunk_tokens: Optional[int] = typer.Option(None, "--chunk-tokens", help="tokens per chunk for a new collection"),
    chunk_overlap: Optional[int] = typer.Option(None, "--chunk-overlap", help="overlap in tokens for a new collection"),
    index: Optional[str] = typer.Option(None, "--index", help="FAISS factory string for a new collection"),
    quantize: Optional[bool] = typer.Option(None, "--quantize/--no-quantize", help="int8 encoder (CPU)"),
    prune: bool = typer.Option(True, "--prune/--no-prune", help="delete documents whose files vanished from a re-ingested folder"),
    ray: bool = typer.Option(False, "--ray", help="parse, chunk and embed on a Ray cluster [address: env RAG_RAY_ADDRESS, else auto]"),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster (implies --ray): auto, local or HOST:PORT"),
    as_json: bool = JsonOpt,
) -> None:
    """Ingest files into a collection: unchanged files are skipped, changed ones replaced."""
    rt = _runtime(
        embedding_model=model, chunk_tokens=chunk_tokens, chunk_overlap=chunk_overlap, index_factory=index, quantize=quantize,
        ray_address=ray_address,
    )
    if ray and not rt.settings.ray_address:
        rt.settings.ray_address = "auto"
    target = rt.writable_collection(collection)
    report = rt.ingestor(target, show_progress=not as_json).ingest_paths(paths, prune=prune)
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
            typer.echo(f"error: {error['error']}", err=True)
    if report.errors and not (report.documents_added or report.documents_replaced or report.documents_unchanged):
        raise typer.Exit(1)


@app.command()
def search(
    query: str = typer.Argument(..., help="the question or keywords"),
    collection: Optional[str] = CollectionOpt,
    k: int = typer.Option(10, "-k", "--top-k", help="passages to return"),
    retriever: Optional[str] = RetrieverOpt,
    fusion: Optional[str] = FusionOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Print the passages most similar to QUERY."""
    rt = _runtime(retriever=retriever, fusion=fusion)
    passages = rt.retriever(collection).retrieve(query, k)
    if as_json:
        _print_json([p.to_dict() for p in passages])
        return
    if not passages:
        typer.echo("no passages (the collection is empty)")
    for p in passages:
        title = p.title or Path(p.source).name
        typer.echo(f"{p.rank:>2}. {p.score:.4f}  {title} — {p.source}:{p.start}-{p.end}  (doc {p.doc_id}, chunk {p.chunk_id})")
        typer.echo(textwrap.indent(textwrap.shorten(p.text, 300, placeholder=" …"), "    "))


@app.command()
def collections(as_json: bool = JsonOpt) -> None:
    """List collections."""
    rt = _runtime()
    names = rt.store.collection_names()
    if as_json:
        _print_json([rt.store.collection(n).stats() for n in names])
        return
    if not names:
        typer.echo("no collections yet: rag ingest PATH")
    for name in names:
        s = rt.store.collection(name).stats()
        typer.echo(f"{name}: {s['documents']} documents, {s['chunks']} chunks, {s['encoder']['model']}")


@app.command()
def stats(collection: Optional[str] = CollectionOpt, as_json: bool = JsonOpt) -> None:
    """Documents, chunks and vectors counted from SQL and from FAISS."""
    info = _runtime().collection(collection).stats()
    if as_json:
        _print_json(info)
        return
    for key in ("collection", "documents", "chunks", "vectors", "index_factory", "dim", "index_bytes"):
        typer.echo(f"{key:>14}: {info[key]}")
    typer.echo(f"{'encoder':>14}: {info['encoder']['model']} ({info['encoder']['pooling']} pooling, normalize={info['encoder']['normalize']})")


@app.command()
def delete(
    refs: list[str] = typer.Argument(..., help="document ids, external ids or source paths"),
    collection: Optional[str] = CollectionOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Remove documents from SQL and FAISS together."""
    target = _runtime().collection(collection)
    ids = sorted({i for ref in refs for i in target.find_documents(ref)})
    with target.writer():
        result = target.delete(ids)
    if as_json:
        _print_json({"collection": target.name, "deleted": result["deleted"], "document_ids": ids})
    else:
        typer.echo(f"{target.name}: deleted {result['deleted']} documents")


@app.command()
def doctor(
    collection: Optional[str] = CollectionOpt,
    repair: bool = typer.Option(True, "--repair/--check-only", help="fix drift (re-embed missing vectors, drop orphans)"),
    as_json: bool = JsonOpt,
) -> None:
    """Check that SQL and FAISS agree; exit 0 only when they do."""
    rt = _runtime()
    target = rt.collection(collection)
    before = target.check()
    after = before
    if repair and not before.consistent:
        encoder = rt.encoder_for(target)
        with target.writer():
            after = target.repair(lambda texts: encoder.encode(texts, kind="passage"))
    if as_json:
        _print_json({"collection": target.name, "before": before.to_dict(), "after": after.to_dict()})
    else:
        b = before.to_dict()
        typer.echo(
            f"{target.name}: {b['sql_chunks']} chunks in SQL, {b['faiss_vectors']} vectors in FAISS, "
            f"{b['missing_in_faiss']} missing, {b['orphans_in_faiss']} orphans, "
            f"{b['pending_documents']} pending, {b['deleting_documents']} deleting"
        )
        if after is not before:
            typer.echo("repaired: consistent" if after.consistent else f"still inconsistent: {after.to_dict()}")
        elif before.consistent:
            typer.echo("consistent")
    if not after.consistent:
        raise typer.Exit(1)


@eval_app.command("retrieval")
def eval_retrieval(
    beir: Path = typer.Option(..., "--beir", help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv"),
    split: str = typer.Option("test", "--split"),
    collection: Optional[str] = typer.Option(None, "--collection", "-c", help="default: beir-FOLDERNAME"),
    retriever: Optional[str] = RetrieverOpt,
    fusion: Optional[str] = FusionOpt,
    as_json: bool = JsonOpt,
) -> None:
    """nDCG@10, Recall@100, MRR@10 and latency; ingests the corpus first if needed."""
    from rag.evaluation.retrieval import evaluate_retrieval, read_beir

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
        **evaluate_retrieval(rt.retriever(name), data),
    }
    if as_json:
        _print_json(result)
    else:
        typer.echo(
            f"{name} ({split}, {result['retriever']}, {result['queries']} queries): nDCG@10 {result['ndcg@10']:.4f}  "
            f"Recall@100 {result['recall@100']:.4f}  MRR@10 {result['mrr@10']:.4f}  "
            f"p50 {result['latency_p50_ms']:.1f} ms  p95 {result['latency_p95_ms']:.1f} ms"
        )


# Commands that live in their own modules: each module defines `register(app, eval_app)` and
# imports nothing heavy at module level. Add a module by appending its name here.
COMMAND_MODULES: list[str] = ["rag.cli_serve", "rag.cli_answers", "rag.cli_reader", "rag.cli_models"]


def _register_command_modules() -> None:
    import importlib

    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(app, eval_app)


_register_command_modules()


def main() -> None:
    try:
        app()
    except RagError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("interrupted; what was fully written is kept", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
