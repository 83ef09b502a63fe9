"""`rag eval reader`, `rag train-reader` and `rag train-verifier`: the commands of the two models we train.

Torch and transformers are imported inside the commands, so `rag --help` stays instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

# options both training commands take
OUT = typer.Option(..., "--out", help="output folder; a checkpoint there is resumed")
MAX_MINUTES = typer.Option(None, "--max-minutes", min=0, help="stop (and checkpoint) after this long")
EPOCHS = typer.Option(1, "--epochs", min=1)
MAX_STEPS = typer.Option(None, "--max-steps", min=1, help="optimizer steps [default: epochs over the data]")
BATCH_SIZE = typer.Option(32, "--batch-size", min=1)
WARMUP_RATIO = typer.Option(0.1, "--warmup-ratio", min=0, max=1)
CHECKPOINT_EVERY = typer.Option(50, "--checkpoint-every", min=1, help="steps between checkpoints")


def register(app: typer.Typer, eval_app: typer.Typer) -> None:
    from cli.main import JsonOpt, _print_json, _runtime

    @eval_app.command("reader")
    def eval_reader(
        squad: Path = typer.Option(..., "--squad", help="SQuAD v1.1 JSON (.json or .json.gz)"),
        model: str | None = typer.Option(None, "--model", help="reader model, HF id or folder [env RAG_READER_MODEL]"),
        limit: int | None = typer.Option(None, "--limit", min=1, help="only the first N questions"),
        paragraphs_per_article: int | None = typer.Option(
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

    @app.command("train-reader")
    def train_reader_command(
        train: Path = typer.Option(..., "--train", help="SQuAD-format training JSON (.json or .json.gz)"),
        base: str = typer.Option(..., "--base", help="encoder to fine-tune: HF id or folder"),
        out: Path = OUT,
        max_minutes: float | None = MAX_MINUTES,
        eval_file: Path | None = typer.Option(None, "--eval", help="SQuAD JSON to score the result on (EM/F1)"),
        limit: int | None = typer.Option(None, "--limit", min=1, help="train on the first N questions only"),
        eval_limit: int | None = typer.Option(None, "--eval-limit", min=1, help="score the first N eval questions only"),
        epochs: int = EPOCHS,
        max_steps: int | None = MAX_STEPS,
        batch_size: int = BATCH_SIZE,
        lr: float = typer.Option(1e-4, "--lr", min=0),
        warmup_ratio: float = WARMUP_RATIO,
        max_len: int = typer.Option(256, "--max-len", min=32, help="tokens per training window"),
        stride: int = typer.Option(96, "--stride", min=0, help="overlap between windows, in tokens"),
        checkpoint_every: int = CHECKPOINT_EVERY,
        seed: int = typer.Option(0, "--seed"),
        as_json: bool = JsonOpt,
    ) -> None:
        """Fine-tune an encoder into an extractive reader (AdamW, warm-up, linear decay), resumable."""
        from rag.training import TrainConfig, train_reader

        config = TrainConfig(
            train=str(train),
            base=base,
            out=str(out),
            limit=limit,
            max_minutes=max_minutes,
            epochs=epochs,
            max_steps=max_steps,
            batch_size=batch_size,
            lr=lr,
            warmup_ratio=warmup_ratio,
            max_len=max_len,
            stride=stride,
            checkpoint_every=checkpoint_every,
            seed=seed,
            threads=_runtime().settings.threads,
        )
        result = train_reader(config, show_progress=not as_json, eval_file=str(eval_file) if eval_file else None, eval_limit=eval_limit)
        if as_json:
            _print_json(result.to_dict())
            return
        typer.echo(
            f"{result.summary()}, {result.questions} questions, {result.features} windows, loss {result.loss}, {result.seconds:.0f}s"
        )
        if result.eval:
            typer.echo(f"eval ({result.eval['questions']} questions): EM {result.eval['exact_match']:.1f}  F1 {result.eval['f1']:.1f}")

    @app.command("train-verifier")
    def train_verifier_command(
        train: Path = typer.Option(..., "--train", help="SQuAD-format JSON to build pairs from (.json/.json.gz); not the articles the judge is tested on"),
        base: str = typer.Option(..., "--base", help="model to fine-tune: a (claim, passage) classifier or an encoder, HF id or folder"),
        out: Path = OUT,
        max_minutes: float | None = MAX_MINUTES,
        limit: int | None = typer.Option(None, "--limit", min=1, help="build pairs from the first N questions only"),
        per_kind: int | None = typer.Option(2000, "--per-kind", min=1, help="pairs of each kind at most (name swap, number, answer with question, ...)"),
        epochs: int = EPOCHS,
        max_steps: int | None = MAX_STEPS,
        batch_size: int = BATCH_SIZE,
        lr: float = typer.Option(2e-5, "--lr", min=0),
        warmup_ratio: float = WARMUP_RATIO,
        max_len: int = typer.Option(256, "--max-len", min=32, help="tokens per (claim, passage) pair"),
        checkpoint_every: int = CHECKPOINT_EVERY,
        bf16: bool = typer.Option(False, "--bf16", help="bfloat16 autocast (fast on CPUs with AMX, and on GPUs)"),
        scifact: Path | None = typer.Option(None, "--scifact", help="BEIR SciFact folder: add the claims of its train part (ids divisible by 4)"),
        scifact_repeat: int = typer.Option(1, "--scifact-repeat", min=1, help="each SciFact pair this many times (they are few)"),
        seed: int = typer.Option(0, "--seed"),
        as_json: bool = JsonOpt,
    ) -> None:
        """Fine-tune the support judge on labelled pairs built from SQuAD-format data (resumable);
        export it with scripts/export_models.py and calibrate it with `rag eval verifiers --part design`."""
        from rag.training import TrainConfig, train_verifier

        config = TrainConfig(
            train=str(train), base=base, out=str(out), limit=limit, max_minutes=max_minutes, epochs=epochs, max_steps=max_steps,
            batch_size=batch_size, lr=lr, warmup_ratio=warmup_ratio, max_len=max_len, stride=0, checkpoint_every=checkpoint_every,
            seed=seed, threads=_runtime().settings.threads, bf16=bf16,
        )
        result = train_verifier(
            config, per_kind=per_kind, show_progress=not as_json, scifact=str(scifact) if scifact else None, scifact_repeat=scifact_repeat
        )
        if as_json:
            _print_json(result.to_dict())
            return
        typer.echo(f"{result.summary()}, {result.pairs} pairs ({result.supported} supported), loss {result.loss}, {result.seconds:.0f}s")
