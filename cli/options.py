"""The options and checks every `rag` command module shares, so that each command can be a plain
module-level function (defaults are evaluated where the function is defined)."""

from __future__ import annotations

import json
from typing import Any

import typer

CollectionOpt = typer.Option(None, "--collection", "-c", help="collection name [default: RAG_COLLECTION or 'default']")
JsonOpt = typer.Option(False, "--json", help="print JSON instead of text")
ReportOpt = typer.Option(
    None, "--report", help="also write a self-contained HTML report (plots, per-question table); a copy goes to RAG_HOME/reports"
)


def _one_of(*choices: str) -> Any:
    def check(value: str | None) -> str | None:
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


def text_argument(value: str) -> str:
    """A query as typed: bytes that are not UTF-8 (Python keeps them as lone surrogates) are a
    usage error here, not a traceback deep in the tokenizer."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise typer.BadParameter("not valid UTF-8 text; check the terminal's encoding (LANG, LC_ALL)") from None
    return value


def k_between(low: int, high: int) -> Any:
    """An option callback refusing a passage count outside [low, high] as a usage error (exit 2)."""

    def check(value: int | None) -> int | None:
        if value is not None and not low <= value <= high:
            raise typer.BadParameter(f"k must be between {low} and {high}, not {value}")
        return value

    return check


WhereOpt = typer.Option(
    None,
    "--where",
    "-w",
    help='only documents matching a filter: JSON such as \'{"year": {"$gte": 2020}}\', or key=value (repeatable; all must hold)',
)


def where_option(values: list[str] | None) -> Any:
    """`--where` parsed (indexes/filters.py), or None; a bad filter is a usage error (exit 2)."""
    from indexes.filters import FilterError, parse_cli

    try:
        return parse_cli(values)
    except FilterError as exc:
        raise typer.BadParameter(str(exc), param_hint="--where") from None


def _print_json(payload: Any) -> None:
    typer.echo(json.dumps(payload, indent=2, ensure_ascii=False, default=str))
