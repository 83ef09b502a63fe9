"""What built a collection, checked before anything is stored, and how its indexes are searched."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any

from indexes.encoder import EncoderSpec
from indexes.errors import InvalidConfig, InvalidInput
from indexes.faisslib import load_faiss


@dataclass(frozen=True)
class SearchParams:
    """FAISS search-time knobs; None means "the collection's setting, else a size-based default"."""

    nprobe: int | None = None
    ef_search: int | None = None

    def __post_init__(self) -> None:
        for name in ("nprobe", "ef_search"):
            value = getattr(self, name)
            if value is not None and not 1 <= int(value) <= 65536:
                raise InvalidInput(f"{name} must be between 1 and 65536, not {value}")

    def over(self, base: SearchParams) -> SearchParams:
        """These values where set, `base`'s elsewhere."""
        return SearchParams(
            nprobe=self.nprobe if self.nprobe is not None else base.nprobe,
            ef_search=self.ef_search if self.ef_search is not None else base.ef_search,
        )


def default_nprobe(nlist: int) -> int:
    """About sqrt(nlist) lists, at least 8, for an IVF whose nprobe was not tuned when it was
    trained (`indexes.vector.tuned_nprobe`; files written before that): IVF64 -> 8, IVF1024 -> 32.
    Too few for recall 0.99 on real embeddings (0.90 with 11 of 128 on SciFact), hence the tuning."""
    return max(1, min(nlist, max(8, int(round(math.sqrt(nlist))))))


def default_ef_search(vectors: int, k: int) -> int:
    """HNSW's candidate list: 64 below a million vectors, 128 above, never below k."""
    return max(k, 64 if vectors < 1_000_000 else 128)


@dataclass(frozen=True)
class CollectionConfig:
    """What built a collection; a collection is only ever searched and extended with the same."""

    encoder: EncoderSpec
    dim: int
    index_factory: str = "Flat"
    chunk_tokens: int = 200
    chunk_overlap: int = 32
    title_in_embedding: bool = True
    search: SearchParams = SearchParams()

    def to_dict(self) -> dict[str, Any]:
        return {
            "encoder": self.encoder.to_dict(),
            "dim": self.dim,
            "index_factory": self.index_factory,
            "chunk_tokens": self.chunk_tokens,
            "chunk_overlap": self.chunk_overlap,
            "title_in_embedding": self.title_in_embedding,
            "nprobe": self.search.nprobe,
            "ef_search": self.search.ef_search,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CollectionConfig:
        """Parse and validate a stored config; a config that no longer loads raises InvalidInput."""
        try:
            config = cls(
                encoder=EncoderSpec.from_dict(data["encoder"]),
                dim=int(data["dim"]),
                index_factory=data.get("index_factory", "Flat"),
                chunk_tokens=int(data.get("chunk_tokens", 200)),
                chunk_overlap=int(data.get("chunk_overlap", 32)),
                title_in_embedding=bool(data.get("title_in_embedding", True)),
                search=SearchParams(nprobe=data.get("nprobe"), ef_search=data.get("ef_search")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"stored collection config does not load: {type(exc).__name__}: {exc}") from None
        config.validate()
        return config

    def with_search(self, search: SearchParams) -> CollectionConfig:
        return replace(self, search=search)

    def embedding_text(self, title: str, text: str) -> str:
        """What the encoder sees for a chunk: the title first when configured (BEIR's recipe).
        The one definition, for every process that embeds (this one, or a Ray worker)."""
        if self.title_in_embedding and title:
            return f"{title} {text}"
        return text

    def validate(self) -> None:
        """Every setting checked before a collection is created: a bad one is refused here, not
        after its config has been stored (where it would break every later command)."""
        if not self.encoder.model:
            raise InvalidInput("the collection needs an embedding model")
        if not 1 <= self.dim <= 65536:
            raise InvalidInput(f"embedding dimension {self.dim} is out of range")
        if self.chunk_tokens < 8:
            raise InvalidInput(f"chunk size {self.chunk_tokens} tokens is too small (at least 8)")
        if not 0 <= self.chunk_overlap < self.chunk_tokens:
            raise InvalidInput(
                f"chunk overlap {self.chunk_overlap} must be at least 0 and below the chunk size {self.chunk_tokens}"
            )
        check_factory(self.index_factory, self.dim)


ONDISK = "OnDisk,"  # our prefix: an IVF whose inverted lists live in a file on disk (indexes/ondisk.py)


def is_ondisk(factory: str) -> bool:
    return factory.strip().startswith(ONDISK)


def faiss_factory(factory: str) -> str:
    """The FAISS factory string proper, without our `OnDisk,` prefix."""
    factory = factory.strip()
    return factory[len(ONDISK):].strip() if factory.startswith(ONDISK) else factory


def normalise_factory(factory: str) -> str:
    """Wrap id-less index types in IDMap2; IVF indexes carry ids natively. `OnDisk,` stays in front."""
    factory = factory.strip()
    if not factory:
        raise InvalidInput("empty FAISS factory string")
    if is_ondisk(factory):
        return ONDISK + normalise_factory(faiss_factory(factory))
    if factory.startswith("IDMap") or factory.startswith("IVF"):
        return factory
    return f"IDMap2,{factory}"


MAX_FACTORY_CHARS = 200  # FAISS parses factory strings recursively: 15,000 characters crash it


def check_factory(factory: str, dim: int) -> None:
    """Build the index FAISS would build (untrained, empty): a typo fails here with FAISS's reason.
    `OnDisk,` takes only IVF indexes (their inverted lists are what lives on disk). Parameters
    FAISS accepts but cannot work with (`IVF0`, `HNSW0`, `HNSW1`) are refused here, before an
    index is built: `HNSW0` aborts the process on its second batch, so it cannot be tried.
    (`vector.exercise_factory` then tries the index on a few vectors.)"""
    if len(factory) > MAX_FACTORY_CHARS:
        raise InvalidConfig(f"index factory string of {len(factory):,} characters is too long (at most {MAX_FACTORY_CHARS})")
    for kind, smallest in (("IVF", 1), ("HNSW", 2), ("NSG", 2), ("IMI2x", 1)):
        for found in re.finditer(rf"(?<![A-Za-z]){kind}(\d+)", factory):
            if int(found.group(1)) < smallest:
                raise InvalidConfig(f"index {factory!r}: {kind}{found.group(1)} cannot work; its parameter must be at least {smallest}")
    faiss = load_faiss()
    try:
        index = faiss.index_factory(dim, faiss_factory(normalise_factory(factory)), faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "not a FAISS factory string"
        raise InvalidConfig(f"index {factory!r} is not a valid FAISS factory string for {dim} dimensions: {reason}") from None
    if is_ondisk(factory) and faiss.try_extract_index_ivf(index) is None:
        raise InvalidConfig(f"index {factory!r}: only IVF indexes can live on disk (e.g. 'OnDisk,IVF1024,SQ8')")
