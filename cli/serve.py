"""`rag serve` and `rag keys`: the API's commands. FastAPI and uvicorn are imported inside them,
so `rag --help` stays instant and the CLI never depends on `api` at import time."""

from __future__ import annotations

from typing import Any

import typer


def _settings(**overrides: Any) -> Any:
    from cli.main import _State
    from rag.settings import load_settings

    return load_settings(**{**_State.overrides, **overrides})


def _key_store() -> Any:
    from api.keys import KeyStore
    from indexes.store import Store

    settings = _settings()
    return KeyStore(Store(settings.home, settings.sql_url))


def register(app: typer.Typer, eval_app: typer.Typer) -> None:
    keys_app = typer.Typer(help="API keys: create (shown once), list, revoke.", no_args_is_help=True)
    app.add_typer(keys_app, name="keys")

    @app.command()
    def serve(
        host: str | None = typer.Option(None, "--host", help="interface to bind [env RAG_API_HOST, default 127.0.0.1]"),
        port: int | None = typer.Option(None, "--port", help="port [env RAG_API_PORT, default 8000]"),
        no_auth: bool = typer.Option(False, "--no-auth", help="no API keys: local development on loopback only"),
        log_level: str = typer.Option("info", "--log-level", help="uvicorn log level"),
    ) -> None:
        """Serve the HTTP API and the web page (one process, models loaded once)."""
        settings = _settings(api_host=host, api_port=port, auth=False if no_auth else None)
        from api.state import refuse_open_without_auth

        refuse_open_without_auth(settings)
        import uvicorn

        from api.app import create_app

        if settings.auth:
            typer.echo(f"serving on http://{settings.api_host}:{settings.api_port} (API keys required: rag keys create)", err=True)
        else:
            typer.echo(f"serving on http://{settings.api_host}:{settings.api_port} WITHOUT authentication (--no-auth)", err=True)
        uvicorn.run(
            create_app(settings),
            host=settings.api_host,
            port=settings.api_port,
            log_level=log_level,
            proxy_headers=False,
            timeout_graceful_shutdown=30,
        )

    @keys_app.command("create")
    def keys_create(
        name: str = typer.Option(..., "--name", help="who or what uses the key"),
        scope: str = typer.Option("read", "--scope", help="read (search, ask) or write (also ingest, delete)"),
        collection: str | None = typer.Option(None, "--collection", "-c", help="limit the key to one collection"),
        key_filter: list[str] | None = typer.Option(
            None, "--where", help='a mandatory filter ANDed into every read of the key (a tenant): \'{"tenant": "acme"}\' or tenant=acme'
        ),
        as_json: bool = typer.Option(False, "--json", help="print JSON instead of text"),
    ) -> None:
        """Create a key and print it once; only its SHA-256 is stored."""
        from indexes.errors import CollectionNotFound

        keys = _key_store()
        if collection is not None:
            try:  # a key for a collection that does not exist is a typo (or one not made yet)
                keys.store.collection(collection)
            except CollectionNotFound as exc:
                raise typer.BadParameter(str(exc), param_hint="--collection") from None
        from cli.main import where_option

        chosen = where_option(key_filter)
        key, record = keys.create(name, scope, collection, chosen.to_dict() if chosen else None)
        if as_json:
            import json

            typer.echo(json.dumps({**record, "key": key}, indent=2))
            return
        typer.echo(key)
        where = f"collection {collection!r}" if collection else "all collections"
        typer.echo(f"key {record['name']!r} ({scope}, {where}): store it now, it cannot be shown again", err=True)

    @keys_app.command("list")
    def keys_list(
        all_keys: bool = typer.Option(False, "--all", help="include revoked keys"),
        as_json: bool = typer.Option(False, "--json", help="print JSON instead of text"),
    ) -> None:
        """List keys (names, scopes and prefixes; never the keys)."""
        records = _key_store().list(include_revoked=all_keys)
        if as_json:
            import json

            typer.echo(json.dumps(records, indent=2))
            return
        if not records:
            typer.echo("no keys: rag keys create --name NAME --scope read|write")
        for r in records:
            state = f" revoked {r['revoked_at']}" if r["revoked_at"] else ""
            typer.echo(f"{r['id']:>4}  {r['name']:<24} {r['scope']:<5} {r['collection'] or '*':<20} {r['prefix']}…{state}")

    @keys_app.command("revoke")
    def keys_revoke(ref: str = typer.Argument(..., help="key name, id or the key itself")) -> None:
        """Revoke a key; requests with it get 401 from then on."""
        record = _key_store().revoke(ref)
        typer.echo(f"revoked key {record['name']!r} ({record['prefix']}…)")
