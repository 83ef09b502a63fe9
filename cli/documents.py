"""`rag documents`: list a collection's documents (with the search filter language) and change a
document's metadata without re-embedding it."""

from __future__ import annotations

import typer


def register(app: typer.Typer, eval_app: typer.Typer) -> None:  # noqa: ARG001 (every command module takes both)
    from cli.main import CollectionOpt, JsonOpt, WhereOpt, _print_json, _runtime, where_option

    documents_app = typer.Typer(help="List documents (filtered like search), change their metadata.", no_args_is_help=True)
    app.add_typer(documents_app, name="documents")

    @documents_app.command("list")
    def documents_list(
        collection: str | None = CollectionOpt,
        where: list[str] | None = WhereOpt,
        offset: int = typer.Option(0, "--offset", min=0, help="skip this many documents (by id)"),
        limit: int = typer.Option(100, "--limit", min=1, max=100_000, help="documents to list"),
        as_json: bool = JsonOpt,
    ) -> None:
        """Documents by id, only those matching --where when given."""
        chosen = where_option(where)
        target = _runtime().collection(collection)
        listed = target.documents(offset, limit, where=chosen)
        if as_json:
            _print_json(listed)
            return
        if not listed:
            typer.echo("no documents" + (" match the filter" if chosen else ""))
        for doc in listed:
            meta = ", ".join(f"{k}={v}" for k, v in sorted((doc["metadata"] or {}).items()))
            typer.echo(f"{doc['id']:>6}  {doc['source']}  ({doc['chunks']} passages)  {meta}")

    @documents_app.command("set-metadata")
    def documents_set_metadata(
        ref: str = typer.Argument(..., help="the document: its id, or an external id / source with --by"),
        pairs: list[str] = typer.Argument(..., help="key=value ... (numbers, true/false and JSON lists typed; key= with nothing removes it)"),
        by: str = typer.Option("id", "--by", help="what REF is: id, external_id or source"),
        replace: bool = typer.Option(False, "--replace", help="replace all metadata instead of changing only the keys given"),
        collection: str | None = CollectionOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        """Change a document's metadata in place: no re-embedding; the next search's filter sees it."""
        from indexes.errors import InvalidInput
        from indexes.metadata import parse_pairs

        if by not in ("id", "external_id", "source"):
            raise typer.BadParameter("use id, external_id or source", param_hint="--by")
        removed = [p[:-1] for p in pairs if p.endswith("=") and "=" not in p[:-1]]
        try:
            changes: dict[str, object] = dict(parse_pairs([p for p in pairs if p[:-1] not in removed]))
        except InvalidInput as exc:
            raise typer.BadParameter(str(exc), param_hint="KEY=VALUE") from None
        changes.update({key: None for key in removed})  # "key=" with nothing after it removes the key
        target = _runtime().writable_collection(collection)
        results = {}
        for doc_id in target.find_documents(ref, by=by):  # type: ignore[arg-type]
            results[doc_id] = target.set_metadata(doc_id, changes, merge=not replace)
        if as_json:
            _print_json([{"id": i, "metadata": m} for i, m in results.items()])
            return
        for doc_id, metadata in results.items():
            typer.echo(f"document {doc_id}: " + ", ".join(f"{k}={v}" for k, v in sorted(metadata.items())))
