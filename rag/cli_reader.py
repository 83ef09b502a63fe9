"""`rag eval reader` and `rag train-reader`: the extractive reader's commands.

Torch and transformers are imported inside the commands, so `rag --help` stays instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer


def register(app: typer.Typer, eval_app: typer.Typer) -> None:
    from rag.cli import JsonOpt, _print_json, _runtime

    @eval_app.command("reader")
    def eval_reader(
        squad: Path = typer.Option(..., "--squad", help="SQuAD v1.1 JSON (.json or .json.gz)"),
        model: Optional[str] = typer.Option(None, "--model", help="reader model, HF id or folder [env RAG_READER_MODEL]"),
        limit: Optional[int] = typer.Option(None, "--limit", min=1, help="only the first N questions"),
        paragraphs_per_article: Optional[int] = typer.Option(
            None, "--paragraphs-per-article", min=1, help="only the first N paragraphs of each article"
        ),
        as_json: bool = JsonOpt,
    ) -> None:
        """Exact match and F1 (official SQuAD v1.1 scoring), each question read against its own paragraph."""
        from rag.evaluation.squad import evaluate_reader, read_squad

        questions = read_squad(squad, paragraphs_per_article=paragraphs_per_article, limit=limit)
        rt = _runtime(reader_model=model)
        result: dict[str, Any] = {
            "squad": str(squad),
            "model": rt.settings.reader_model,
            **evaluate_reader(rt.reader(), questions, show_progress=not as_json),
        }
        if as_json:
            _print_json(result)
        else:
            typer.echo(
                f"{Path(squad).name} ({result['questions']} questions, {result['model']}): "
                f"EM {result['exact_match']:.1f}  F1 {result['f1']:.1f}  "
                f"({result['questions_per_second']} questions/s)"
            )
