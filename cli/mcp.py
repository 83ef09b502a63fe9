"""`rag mcp`: the Model Context Protocol server on stdin/stdout (see api/mcp_server.py)."""

from __future__ import annotations

import typer


def register(app: typer.Typer, eval_app: typer.Typer) -> None:
    @app.command()
    def mcp() -> None:
        """Serve the search, ask and list_collections tools over MCP (stdio), for agents and IDEs."""
        from cli.main import _runtime

        try:
            from api.mcp_server import serve_stdio
        except ImportError as exc:  # the `mcp` extra is not installed
            from indexes.errors import MissingDependency

            raise MissingDependency(f"rag mcp needs the mcp package: pip install 'rag[mcp]' ({exc})") from exc
        serve_stdio(_runtime())
