"""`rag train-reader`: trains on a tiny subset, checkpoints, resumes, and what it saves is a reader."""

from __future__ import annotations

import json
from pathlib import Path

from indexes.encoder import resolve_model_path
from rag.reader import ExtractiveReader
from rag.training import CHECKPOINT, STATE_FILE, TrainConfig, train_reader
from tests.conftest import DATA, run_cli

TRAIN = DATA / "squad" / "squad-v1.1-train-rebuilt.json.gz"
BASE = resolve_model_path("sentence-transformers/all-MiniLM-L6-v2")  # an encoder without a span head


def _config(out: Path, **changes: object) -> TrainConfig:
    values: dict[str, object] = dict(
        train=str(TRAIN), base=BASE, out=str(out), limit=16, max_steps=2, batch_size=8, max_len=128, stride=32,
        checkpoint_every=1, lr=1e-4,
    )
    values.update(changes)
    return TrainConfig(**values)  # type: ignore[arg-type]


def test_training_stops_on_its_time_budget_then_resumes_from_the_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "reader"
    first = train_reader(_config(out, max_minutes=0.0))  # the budget is spent after one step
    assert (first.step, first.completed, first.resumed_from) == (1, False, 0)
    assert (out / CHECKPOINT / STATE_FILE).is_file()
    assert first.features >= 16 and first.loss is not None

    second = train_reader(_config(out))
    assert (second.resumed_from, second.step, second.completed) == (1, 2, True)
    assert len(second.history) == 2 and second.history[0] == first.history[0]

    args = json.loads((out / "training_args.json").read_text(encoding="utf-8"))
    assert args["completed"] and args["steps"] == 2
    (span,) = ExtractiveReader(str(out)).read("Where do I live?", ["My name is Michael and I live in Taipei."])
    assert span.text and "My name is Michael and I live in Taipei."[span.start : span.end] == span.text


def test_train_reader_command_saves_a_loadable_reader(tmp_path: Path) -> None:
    out = tmp_path / "cli-reader"
    result = run_cli(
        "train-reader", "--train", str(TRAIN), "--base", BASE, "--out", str(out), "--limit", "8",
        "--max-steps", "1", "--batch-size", "8", "--max-len", "96", "--stride", "32", "--json",
        home=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["completed"] and report["step"] == 1
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
