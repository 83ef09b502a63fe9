"""Fine-tune any encoder into a span reader on SQuAD-format JSON, within a time budget, resumably.

The preprocessing is the standard Hugging Face one (question-first windows with stride, gold
character span to token start/end, CLS when the answer is outside the window), so what it trains
reads the same way `rag.reader.ExtractiveReader` reads.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from indexes.encoder import resolve_model_path, set_threads
from indexes.errors import InvalidInput, MissingDependency, ModelLoadError
from ingest.progress import progress_bar
from rag.evaluation.squad import SquadQuestion, read_squad

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint"  # inside --out: model, tokenizer and trainer_state.pt of the last checkpoint
STATE_FILE = "trainer_state.pt"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the run; a checkpoint is resumed only under the same data and schedule."""

    train: str
    base: str
    out: str
    limit: int | None = None
    max_minutes: float | None = None
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_len: int = 256
    stride: int = 96
    checkpoint_every: int = 50
    seed: int = 0
    threads: int | None = None
    bf16: bool = False  # autocast matmuls to bfloat16: several times faster on CPUs with AMX

    def schedule_key(self) -> dict[str, Any]:
        """The settings a resumed run must share with the run that wrote the checkpoint."""
        keys = ("train", "base", "limit", "epochs", "max_steps", "batch_size", "lr", "weight_decay", "warmup_ratio", "max_len", "stride", "seed")
        return {k: getattr(self, k) for k in keys}


@dataclass(kw_only=True)
class RunResult:
    """What every training run reports: where it saved, how far it got, its last loss."""

    out: str
    total_steps: int
    step: int
    resumed_from: int
    completed: bool
    seconds: float
    loss: float | None
    history: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("history")
        return data

    def summary(self) -> str:
        state = "done" if self.completed else "stopped (run again to resume)"
        return f"{self.out}: step {self.step}/{self.total_steps} {state}, resumed from {self.resumed_from}"


@dataclass(kw_only=True)
class TrainResult(RunResult):
    questions: int
    features: int
    eval: dict[str, Any] | None = None
    skipped_questions: int = 0


def build_features(
    tokenizer: Any, questions: list[SquadQuestion], max_len: int, stride: int
) -> tuple[list[dict[str, Any]], int]:
    """Training windows with start/end token positions; returns (features, questions skipped).

    A question whose first gold answer is not found at its `answer_start` (nor anywhere in the
    context) is skipped rather than taught a wrong span.
    """
    kept: list[tuple[SquadQuestion, int, int]] = []
    skipped = 0
    for q in questions:
        if not q.answers:
            skipped += 1
            continue
        text, start = q.answers[0], q.answer_starts[0]
        if q.context[start : start + len(text)] != text:
            start = q.context.find(text)
            if start < 0:
                skipped += 1
                continue
        kept.append((q, start, start + len(text)))
    if not kept:
        return [], skipped
    enc = tokenizer(
        [q.question.lstrip() for q, _, _ in kept],
        [q.context for q, _, _ in kept],
        truncation="only_second",
        max_length=max_len,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding=False,
    )
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tokenizer.model_input_names]
    features = []
    for i, sample in enumerate(enc["overflow_to_sample_mapping"]):
        _, char_start, char_end = kept[int(sample)]
        ids = enc["input_ids"][i]
        cls = ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in ids else 0
        sequence = enc.sequence_ids(i)
        offsets = enc["offset_mapping"][i]
        context = [t for t, s in enumerate(sequence) if s == 1]
        start_pos = end_pos = cls
        if context and offsets[context[0]][0] <= char_start and offsets[context[-1]][1] >= char_end:
            start_pos = next(t for t in context if offsets[t][1] > char_start)
            end_pos = next(t for t in reversed(context) if offsets[t][0] < char_end)
        feature = {name: enc[name][i] for name in names}
        feature["start_positions"] = start_pos
        feature["end_positions"] = end_pos
        features.append(feature)
    return features, skipped


LABELS = ("start_positions", "end_positions", "labels")  # per-example targets: never padded


def _collate(torch: Any, features: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    width = max(len(f["input_ids"]) for f in features)
    batch: dict[str, Any] = {}
    for name in features[0]:
        if name in LABELS:
            batch[name] = torch.tensor([f[name] for f in features], dtype=torch.long)
        else:
            pad = pad_id if name == "input_ids" else 0
            batch[name] = torch.tensor([f[name] + [pad] * (width - len(f[name])) for f in features], dtype=torch.long)
    return batch


def _import_training() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError as exc:  # pragma: no cover - install problem
        raise MissingDependency(f"training needs torch and transformers: {exc}") from exc
    return torch, transformers


def _read_state(torch: Any, config: TrainConfig) -> dict[str, Any] | None:
    checkpoint = Path(config.out).expanduser() / CHECKPOINT
    if not (checkpoint / STATE_FILE).is_file():
        return None
    state: dict[str, Any] = torch.load(checkpoint / STATE_FILE, weights_only=False)
    if state["config"] != config.schedule_key():
        raise InvalidInput(
            f"{checkpoint} was written by a run with other settings ({state['config']}); "
            "resume with the same options or choose another --out"
        )
    return state


def _load(auto_class: Any, tokenizer_class: Any, config: TrainConfig, resume: bool, **kwargs: Any) -> tuple[Any, Any]:
    source = str(Path(config.out).expanduser() / CHECKPOINT) if resume else resolve_model_path(config.base)
    try:
        tokenizer = tokenizer_class.from_pretrained(source)
        model = auto_class.from_pretrained(source, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(
            f"cannot load base model {config.base!r} ({type(exc).__name__}); give a local folder with --base"
        ) from exc
    return model, tokenizer


def _fit(
    torch: Any, transformers: Any, config: TrainConfig, model: Any, tokenizer: Any, features: list[dict[str, Any]],
    state: dict[str, Any] | None, started: float, show_progress: bool,
) -> dict[str, Any]:
    """The shared loop: AdamW (no decay on biases and norms), warm-up then linear decay, gradient
    clipping, a checkpoint every `checkpoint_every` steps and at the end, a time budget; bf16
    autocast on request. Returns the `RunResult` fields of the run."""
    out = Path(config.out).expanduser()
    checkpoint = out / CHECKPOINT
    steps_per_epoch = math.ceil(len(features) / config.batch_size)
    total = config.max_steps or steps_per_epoch * config.epochs

    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)], "weight_decay": config.weight_decay},
        {"params": [p for n, p in model.named_parameters() if any(k in n for k in no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=config.lr)
    scheduler = transformers.get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total), total)
    step = 0
    history: list[float] = []
    if state:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = int(state["step"])
        history = list(state.get("history", []))
        log.info("resuming %s at step %d of %d", checkpoint, step, total)
    resumed_from = step

    def order(epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(config.seed + epoch)
        return torch.randperm(len(features), generator=generator).tolist()

    saved_at = -1

    def save_checkpoint() -> None:
        nonlocal saved_at
        if saved_at == step:
            return
        saved_at = step
        checkpoint.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(checkpoint)
        tokenizer.save_pretrained(checkpoint)
        payload = {
            "config": config.schedule_key(),
            "step": step,
            "total": total,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "history": history,
        }
        partial = checkpoint / (STATE_FILE + ".tmp")
        torch.save(payload, partial)
        partial.replace(checkpoint / STATE_FILE)  # a crash mid-save keeps the previous state

    pad_id = tokenizer.pad_token_id or 0
    deadline = started + config.max_minutes * 60 if config.max_minutes is not None else None
    bar = progress_bar(total - step, "step", "training", enabled=show_progress)
    model.train()
    epoch_order: tuple[int, list[int]] | None = None
    try:
        while step < total:
            epoch, index = divmod(step, steps_per_epoch)
            if epoch_order is None or epoch_order[0] != epoch:
                epoch_order = (epoch, order(epoch))
            picked = epoch_order[1][index * config.batch_size : (index + 1) * config.batch_size]
            batch = _collate(torch, [features[i] for i in picked], pad_id)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16):
                loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            history.append(float(loss.detach()))
            bar.update(1)
            if step % config.checkpoint_every == 0 and step < total:
                save_checkpoint()
            if deadline is not None and time.perf_counter() >= deadline:
                log.info("time budget of %s minutes spent at step %d of %d", config.max_minutes, step, total)
                break
    finally:
        bar.close()
    model.eval()
    save_checkpoint()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    completed = step >= total
    args = {**asdict(config), "steps": step, "total_steps": total, "features": len(features), "completed": completed}
    (out / "training_args.json").write_text(json.dumps(args, indent=1) + "\n", encoding="utf-8")
    return {
        "out": str(out),
        "total_steps": total,
        "step": step,
        "resumed_from": resumed_from,
        "completed": step >= total,
        "seconds": round(time.perf_counter() - started, 3),
        "loss": round(sum(history[-20:]) / len(history[-20:]), 4) if history else None,
        "history": history,
    }


def train_reader(config: TrainConfig, show_progress: bool = False, eval_file: str | None = None, eval_limit: int | None = None) -> TrainResult:
    """Train (or resume) until done or out of time; save a loadable model in `config.out` either way."""
    torch, transformers = _import_training()
    started = time.perf_counter()
    set_threads(config.threads)
    state = _read_state(torch, config)
    model, tokenizer = _load(transformers.AutoModelForQuestionAnswering, transformers.AutoTokenizer, config, state is not None)
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(f"{config.base!r} has no fast tokenizer; the span labels need offsets")

    questions = read_squad(config.train, limit=config.limit)
    features, skipped = build_features(tokenizer, questions, config.max_len, config.stride)
    if not features:
        raise InvalidInput(f"no trainable questions in {config.train}")
    run = _fit(torch, transformers, config, model, tokenizer, features, state, started, show_progress)
    result = TrainResult(**run, questions=len(questions), features=len(features), skipped_questions=skipped)
    if eval_file:
        from rag.evaluation.squad import evaluate_reader
        from rag.reader import ExtractiveReader

        held_out = read_squad(eval_file, limit=eval_limit)
        result.eval = evaluate_reader(ExtractiveReader(result.out), held_out, show_progress=show_progress)
    return result


@dataclass(kw_only=True)
class VerifierTrainResult(RunResult):
    pairs: int
    supported: int
    kinds: dict[str, int]


def verifier_features(tokenizer: Any, pairs: list[tuple[str, str, int]], max_len: int) -> list[dict[str, Any]]:
    """Tokenised (claim, passage) pairs, claim first, cut to `max_len` the longer side first (for
    these short claims, the passage: as the judge cuts it at answer time)."""
    enc = tokenizer([c for c, _, _ in pairs], [p for _, p, _ in pairs], truncation="longest_first", max_length=max_len, padding=False)
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tokenizer.model_input_names]
    return [{**{n: enc[n][i] for n in names}, "labels": label} for i, (_, _, label) in enumerate(pairs)]


def train_verifier(
    config: TrainConfig, per_kind: int | None = None, show_progress: bool = False, scifact: str | None = None, scifact_repeat: int = 1
) -> VerifierTrainResult:
    """Fine-tune a (claim, passage) -> supported classifier on pairs built from a SQuAD-format
    training file by `rag.evaluation.verification_sets.squad_cases`: the gold sentence, the answer
    with its question and pronoun rewrites (supported); swapped answers, changed numbers, negations,
    swapped names and the sentence against another paragraph (unsupported). The file must share no
    article with the sets the judge is calibrated and tested on (SQuAD train, not dev). At most
    `per_kind` pairs of each kind, chosen by a hash of the id. `scifact` (a BEIR SciFact folder) adds
    the claims of its train part only (`scifact_part`: neither design nor test), each pair
    `scifact_repeat` times. Resumable like `train_reader`."""
    from rag.evaluation.verification_sets import part_of, sample, scifact_cases, squad_cases
    from rag.evaluation.verifiers import training_pairs

    torch, transformers = _import_training()
    started = time.perf_counter()
    set_threads(config.threads)
    state = _read_state(torch, config)
    model, tokenizer = _load(
        transformers.AutoModelForSequenceClassification, transformers.AutoTokenizer, config, state is not None,
        num_labels=2, dtype=torch.float32,
    )
    cases = sample(squad_cases(config.train, part="train", limit=config.limit), per_kind)
    pairs = training_pairs(cases)
    if scifact:
        science = [c for c in scifact_cases(scifact) if part_of(c) == "train"]
        cases += science
        pairs += training_pairs(science) * scifact_repeat
    if not pairs:
        raise InvalidInput(f"no training pairs in {config.train}")
    kinds: dict[str, int] = {}
    for case in cases:
        kinds[case.kind] = kinds.get(case.kind, 0) + 1
    features = verifier_features(tokenizer, pairs, config.max_len)
    run = _fit(torch, transformers, config, model, tokenizer, features, state, started, show_progress)
    return VerifierTrainResult(**run, pairs=len(pairs), supported=sum(label for _, _, label in pairs), kinds=dict(sorted(kinds.items())))
