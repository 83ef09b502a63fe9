"""FAISS behind a six-method contract, built from a factory string, keyed by chunk ids.

Vectors are stored under int64 ids equal to SQL chunk primary keys. Index types that keep their
own ids (IVF) take them directly; the rest are wrapped in `IDMap2` so ids survive removal and can
be listed for consistency checks.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from indexes.errors import InvalidInput
from indexes.atomic import atomic_replace

log = logging.getLogger(__name__)


def _faiss():  # type: ignore[no-untyped-def]
    import faiss

    return faiss


_ONDISK = "OnDisk,"  # our prefix: an IVF whose lists live on disk (indexes/ondisk.py)


def normalise_factory(factory: str) -> str:
    """Wrap id-less index types in IDMap2; IVF indexes carry ids natively."""
    factory = factory.strip()
    if not factory:
        raise InvalidInput("empty FAISS factory string")
    if factory.startswith("IDMap") or factory.startswith("IVF") or factory.startswith(_ONDISK):
        return factory
    return f"IDMap2,{factory}"


def faiss_factory(factory: str) -> str:
    """The FAISS factory string proper, without our `OnDisk,` prefix."""
    return factory[len(_ONDISK):] if factory.startswith(_ONDISK) else factory


class VectorIndex:
    """Inner-product FAISS index with stable ids: add, remove, search, count, ids, save, load."""

    def __new__(cls, dim: int, factory: str = "Flat", index: object | None = None) -> VectorIndex:
        """`OnDisk,IVF...` factories get the on-disk implementation of this same contract."""
        if cls is VectorIndex and factory.strip().startswith(_ONDISK):
            from indexes.ondisk import OnDiskIndex

            return super().__new__(OnDiskIndex)
        return super().__new__(cls)

    def __init__(self, dim: int, factory: str = "Flat", index: object | None = None) -> None:
        faiss = _faiss()
        self.dim = dim
        self.factory = normalise_factory(factory)
        self.index = index if index is not None else faiss.index_factory(
            dim, faiss_factory(self.factory), faiss.METRIC_INNER_PRODUCT
        )
        self.read_only = False

    # -- writing -----------------------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if vectors.shape != (len(ids), self.dim):
            raise InvalidInput(f"expected vectors of shape ({len(ids)}, {self.dim}), got {vectors.shape}")
        if not self.index.is_trained:
            self._train(vectors)
        self.index.add_with_ids(vectors, ids)

    def _train(self, vectors: np.ndarray) -> None:
        faiss = _faiss()
        ivf = faiss.extract_index_ivf(self.index)
        needed = int(ivf.nlist) if ivf is not None else 1
        if len(vectors) < needed:
            raise InvalidInput(
                f"index {self.factory!r} needs at least {needed} vectors to train on the first batch, "
                f"got {len(vectors)}; use a smaller nlist or the exact 'Flat' index"
            )
        sample = vectors
        limit = 256 * needed  # FAISS warns beyond 256 points per centroid; a sample is enough.
        if len(vectors) > limit:
            rng = np.random.default_rng(0)
            sample = vectors[rng.choice(len(vectors), limit, replace=False)]
        log.info("training %s on %d vectors", self.factory, len(sample))
        self.index.train(sample)

    def remove(self, ids: np.ndarray | list[int]) -> int:
        faiss = _faiss()
        ids = np.asarray(list(ids), dtype=np.int64)
        if len(ids) == 0 or self.count() == 0:
            return 0
        try:
            return int(self.index.remove_ids(faiss.IDSelectorBatch(ids)))
        except RuntimeError:
            # HNSW cannot remove in place; rebuild from the stored vectors.
            return self._rebuild_without(ids)

    def _rebuild_without(self, ids: np.ndarray) -> int:
        keep = np.setdiff1d(self.ids(), ids, assume_unique=False)
        removed = self.count() - len(keep)
        vectors = np.vstack([self.index.reconstruct(int(i)) for i in keep]) if len(keep) else None
        fresh = VectorIndex(self.dim, self.factory)
        if vectors is not None:
            fresh.add(keep, vectors)
        self.index = fresh.index
        return removed

    def tune(self, params: str) -> None:
        """Search-time knobs as FAISS names them, e.g. "efSearch=128" or "nprobe=32"."""
        if params:
            faiss = _faiss()
            try:
                faiss.ParameterSpace().set_index_parameters(self.index, params)
            except RuntimeError as exc:
                raise InvalidInput(f"cannot apply {params!r} to {self.factory!r}: {exc}") from None

    # -- reading -----------------------------------------------------------------------------
    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k inner products; missing slots have id -1."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim == 1:
            vectors = vectors[None, :]
        k = max(1, min(k, max(self.count(), 1)))
        return self.index.search(vectors, k)  # type: ignore[no-any-return]

    def count(self) -> int:
        return int(self.index.ntotal)

    def ids(self) -> np.ndarray:
        faiss = _faiss()
        if hasattr(self.index, "id_map"):
            return faiss.vector_to_array(self.index.id_map).astype(np.int64)
        ivf = faiss.extract_index_ivf(self.index)
        if ivf is None:
            raise InvalidInput(f"cannot list ids of index {self.factory!r}")
        invlists = ivf.invlists
        parts = []
        for lst in range(ivf.nlist):
            size = invlists.list_size(lst)
            if size:
                parts.append(faiss.rev_swig_ptr(invlists.get_ids(lst), size).copy())
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)

    # -- persistence -------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write atomically (temporary file, fsync, rename): readers see one generation or the next."""
        faiss = _faiss()
        atomic_replace(path, lambda tmp: faiss.write_index(self.index, tmp), crash_point="faiss:before-rename")

    @classmethod
    def load(cls, path: Path, factory: str, mmap: bool = False) -> VectorIndex:
        """Load from disk; with `mmap`, read-only and memory-mapped where FAISS supports it."""
        faiss = _faiss()
        if factory.strip().startswith(_ONDISK):
            from indexes.ondisk import OnDiskIndex

            return OnDiskIndex.open(path, factory)
        index = None
        if mmap:
            try:
                index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
            except RuntimeError:
                index = None
        if index is None:
            index = faiss.read_index(str(path))
            mmap = False
        loaded = cls(index.d, factory, index=index)
        loaded.read_only = mmap
        return loaded
