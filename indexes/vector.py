"""FAISS behind a small contract, built from a factory string, keyed by chunk ids.

Vectors are stored under int64 ids equal to SQL chunk primary keys. Index types that keep their
own ids (IVF) take them directly; the rest are wrapped in `IDMap2` so ids can be listed for
consistency checks. Search-time knobs (`nprobe`, `efSearch`) travel with each query as FAISS
`SearchParameters`, so concurrent queries with different settings never disturb each other.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from indexes.atomic import atomic_replace
from indexes.config import SearchParams, default_ef_search, default_nprobe, faiss_factory, normalise_factory
from indexes.errors import InvalidConfig, InvalidInput
from indexes.faisslib import load_faiss

log = logging.getLogger(__name__)

TUNED_RECALL = 0.997  # on stand-in queries from the training sample: about 0.99 on real ones (docs/retrieval.md)
HNSW_TUNED_RECALL = 0.99  # HNSW finds stand-ins' neighbours less well than real queries' (docs/retrieval.md)
EF_CHOICES = (64, 96, 128, 192, 256, 384, 512, 768, 1024)  # HNSW candidate lists tried, smallest first
TUNE_MIN_VECTORS = 2_000  # an HNSW segment this small is left at the default efSearch
TUNING_POOL = 50_000  # sample vectors the tuning searches among (a few seconds at most)


def training_size(dim: int, factory: str) -> int:
    """Vectors an index built from `factory` needs before it can be trained well: 39 per IVF list
    (FAISS warns below that), 39 x 256 for a codebook (PQ/SQ) without IVF or PQ with one; 0 when untrained
    indexes do not exist for it (Flat, HNSW). `OnDisk,IVF...` needs what its IVF needs."""
    faiss = load_faiss()
    index = faiss.index_factory(dim, faiss_factory(normalise_factory(factory)), faiss.METRIC_INNER_PRODUCT)
    if index.is_trained:
        return 0
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        return 39 * 256
    # An IVF's PQ codebooks need 256 points each to train, whatever its number of lists: with
    # 39 per list alone, `IVF4,PQ8` got a first segment of 156 vectors and FAISS refused to train.
    return max(39 * int(ivf.nlist), 39 * 256 if "PQ" in factory else 0)


class VectorIndex:
    """Inner-product FAISS index with stable ids: add, remove, search, count, ids, save, load."""

    def __init__(self, dim: int, factory: str = "Flat", index: Any = None) -> None:
        faiss = load_faiss()
        self.dim = dim
        self.factory = normalise_factory(factory)
        self.index: Any = index if index is not None else faiss.index_factory(
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
        faiss = load_faiss()
        ivf = faiss.try_extract_index_ivf(self.index)
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
        if ivf is not None:
            # stored in the index file (FAISS writes an IVF's nprobe), so every later load searches
            # with what this segment's own lists need
            ivf.nprobe = tuned_nprobe(ivf, sample)

    def remove(self, ids: np.ndarray | list[int]) -> int:
        faiss = load_faiss()
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
            faiss = load_faiss()
            try:
                faiss.ParameterSpace().set_index_parameters(self.index, params)
            except RuntimeError as exc:
                raise InvalidInput(f"cannot apply {params!r} to {self.factory!r}: {exc}") from None

    # -- reading -----------------------------------------------------------------------------
    def search(
        self, vectors: np.ndarray, k: int, params: SearchParams | None = None, selector: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k inner products; missing slots have id -1. `params` set nprobe (IVF) or efSearch
        (HNSW) for this call only; unset ones take size-based defaults. `selector` (a FAISS
        IDSelector over chunk ids) restricts the search to the ids it holds (filtered search)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim == 1:
            vectors = vectors[None, :]
        k = max(1, min(k, max(self.count(), 1)))
        faiss_params = self._faiss_params(params or SearchParams(), k, selector)
        if faiss_params is None:
            return self.index.search(vectors, k)
        return self.index.search(vectors, k, params=faiss_params)

    def nlist(self) -> int:
        """An IVF's number of lists (1 for any other index)."""
        ivf = load_faiss().try_extract_index_ivf(self.index)
        return int(ivf.nlist) if ivf is not None else 1

    def effective_params(self, params: SearchParams, k: int = 10) -> dict[str, int]:
        """What a search with `params` uses, for stats and tests."""
        faiss = load_faiss()
        ivf = faiss.try_extract_index_ivf(self.index)
        if ivf is not None:
            # FAISS's own default is 1: an index with more was tuned when trained (or by `tune`)
            trained = int(ivf.nprobe) if int(ivf.nprobe) > 1 else default_nprobe(int(ivf.nlist))
            return {"nprobe": int(params.nprobe or trained)}
        if "HNSW" in self.factory:
            hnsw = _hnsw_of(self.index)
            # FAISS's own default is 16: more was tuned when the segment was built (or by `tune`)
            built = int(hnsw.hnsw.efSearch) if hnsw is not None and int(hnsw.hnsw.efSearch) > 16 else 0
            return {"ef_search": int(params.ef_search or max(built, default_ef_search(self.count(), k)))}
        return {}

    def _faiss_params(self, params: SearchParams, k: int, selector: Any = None) -> object | None:
        faiss = load_faiss()
        chosen = self.effective_params(params, k)
        extra = {} if selector is None else {"sel": selector}
        if "nprobe" in chosen:
            return faiss.SearchParametersIVF(nprobe=chosen["nprobe"], **extra)
        if "ef_search" in chosen:
            return faiss.SearchParametersHNSW(efSearch=max(chosen["ef_search"], k), **extra)
        return faiss.SearchParameters(**extra) if extra else None

    def tune_ef_search(self, ids: np.ndarray, vectors: np.ndarray, k: int = 10, target: float = HNSW_TUNED_RECALL, queries: int = 256) -> None:
        """HNSW, once its vectors are all in: the smallest efSearch of `EF_CHOICES` at which two
        kinds of stand-in queries (as `tuned_nprobe`'s: stored vectors asking for their k nearest
        others, and normalised sums of two) find `target` of their exact top k; kept in the file
        (FAISS writes an HNSW's efSearch). Below `TUNE_MIN_VECTORS` the default is left alone."""
        hnsw = _hnsw_of(self.index)
        if hnsw is None or len(ids) < TUNE_MIN_VECTORS:
            return
        faiss = load_faiss()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        asked, mixed = _stand_in_queries(vectors, queries, np.random.default_rng(0))
        kinds = [(vectors[asked], ids[asked]), (mixed, None)]
        truths = []
        for stand_ins, own in kinds:
            _, near = faiss.knn(stand_ins, vectors, k + 1, metric=faiss.METRIC_INNER_PRODUCT)
            truths.append([_without(ids[row], me, k) for row, me in zip(near, own if own is not None else [None] * len(near))])
        chosen = EF_CHOICES[-1]
        for ef in EF_CHOICES:
            found = 0
            for (stand_ins, own), truth in zip(kinds, truths):
                _, labels = self.search(stand_ins, k + 1, SearchParams(ef_search=ef))
                mine = own if own is not None else [None] * len(labels)
                found += sum(len(set(_without(row, me, k)) & set(t)) for row, me, t in zip(labels, mine, truth))
            if found >= target * k * sum(len(t) for t in truths):
                chosen = ef
                break
        hnsw.hnsw.efSearch = int(chosen)

    def count(self) -> int:
        return int(self.index.ntotal)

    def ids(self) -> np.ndarray:
        faiss = load_faiss()
        if hasattr(self.index, "id_map"):
            return faiss.vector_to_array(self.index.id_map).astype(np.int64)
        ivf = faiss.try_extract_index_ivf(self.index)
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
        faiss = load_faiss()
        atomic_replace(path, lambda tmp: faiss.write_index(self.index, tmp), crash_point="faiss:before-rename")

    @classmethod
    def load(cls, path: Path, factory: str, mmap: bool = False) -> VectorIndex:
        """Load from disk; with `mmap`, read-only and memory-mapped where FAISS supports it."""
        faiss = load_faiss()
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


def _hnsw_of(index: Any) -> Any:
    """The IndexHNSW inside an (IDMap2-wrapped) index, or None."""
    faiss = load_faiss()
    inner = faiss.downcast_index(index.index) if hasattr(index, "id_map") else faiss.downcast_index(index)
    return inner if isinstance(inner, faiss.IndexHNSW) else None


def _stand_in_queries(vectors: np.ndarray, queries: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The tuning's two kinds of stand-in queries: positions of sampled vectors (each asks for its
    nearest others), and normalised sums of two random vectors (a query between topics)."""
    asked = rng.choice(len(vectors), min(queries, len(vectors)), replace=False)
    mixed = vectors[rng.choice(len(vectors), queries)] + vectors[rng.choice(len(vectors), queries)]
    mixed /= np.maximum(np.linalg.norm(mixed, axis=1, keepdims=True), 1e-12)
    return asked, np.ascontiguousarray(mixed, dtype=np.float32)


def _without(row: np.ndarray, own: int | None, k: int) -> list[int]:
    """The first k ids of a ranking, the query's own id left out."""
    return [int(i) for i in row if i != own and i >= 0][:k]


def tuned_nprobe(ivf: Any, vectors: np.ndarray, k: int = 10, target: float = TUNED_RECALL, queries: int = 256) -> int:
    """The fewest lists a search must visit for recall@k >= `target` on two kinds of stand-in
    queries drawn from `vectors` (the training sample), the larger of the two: sample vectors
    asking for their k nearest others, and normalised sums of two random sample vectors (a query
    between topics, far from every passage, as real queries are). A neighbour counts as found when
    its list is among the first nprobe its query's centroids rank (no index is filled for this).

    Why both: on real MiniLM embeddings of SciFact the first kind alone gave recall@10 0.99-0.997 on
    real queries, where about sqrt(nlist) lists gave 0.90; but on a corpus of noisy near-copies it
    chose 3 of 128 lists (0.70 on real queries), since a copy's neighbours are its sibling copies in
    its own list. The mixtures alone fell short on SciFact (0.984-0.986) and held 0.993-0.998 on the
    copies. Figures in docs/retrieval.md."""
    faiss = load_faiss()
    nlist = int(ivf.nlist)
    rng = np.random.default_rng(0)
    if len(vectors) > TUNING_POOL:
        vectors = vectors[rng.choice(len(vectors), TUNING_POOL, replace=False)]
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if len(vectors) <= k + 1 or nlist <= 1:
        return nlist
    _, lists = ivf.quantizer.search(vectors, 1)
    asked, mixed = _stand_in_queries(vectors, queries, rng)
    # sample vectors: their k nearest others (itself dropped; a duplicate of it may stand in)
    _, near = faiss.knn(vectors[asked], vectors, k + 1, metric=faiss.METRIC_INNER_PRODUCT)
    others = np.array([_without(row, q, k) for q, row in zip(asked, near)], dtype=np.int64)
    _, mixed_near = faiss.knn(mixed, vectors, k, metric=faiss.METRIC_INNER_PRODUCT)
    picks = []
    for stand_ins, neighbours in ((vectors[asked], others), (mixed, mixed_near)):
        _, order = ivf.quantizer.search(np.ascontiguousarray(stand_ins), nlist)
        rank = np.empty_like(order)
        rank[np.arange(len(order))[:, None], order] = np.arange(nlist)[None, :]
        needed = rank[np.arange(len(order))[:, None], lists[neighbours, 0]]
        recall = np.bincount(needed.ravel(), minlength=nlist).cumsum() / needed.size
        picks.append(int(np.searchsorted(recall, target) + 1))
    return min(nlist, max(picks))


def stored_vectors(index: VectorIndex, ids: np.ndarray) -> np.ndarray:
    """The vectors stored under `ids` (decoded: exact for Flat/HNSW, approximate for PQ/SQ codes)."""
    faiss = load_faiss()
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) == 0:
        return np.zeros((0, index.dim), dtype=np.float32)
    ivf = faiss.try_extract_index_ivf(index.index)
    if ivf is not None:
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
    return np.asarray(index.index.reconstruct_batch(ids), dtype=np.float32)


def exercise_factory(factory: str, dim: int, params: SearchParams | None = None) -> None:
    """Use an index built from `factory` as the segment store will, on a few random vectors, and
    refuse the factory (InvalidConfig, with FAISS's reason) if any step fails: two batches added,
    a search, the vectors read back, a removal, a merge into a fresh index, a save and a load.

    Only indexes that need no training are tried: they serve every segment from the first batch
    on. An index that needs training serves only segments big enough to train it (smaller ones stay
    `Flat`), and training one here would make creating a collection take seconds to minutes; its
    parameters are checked when it is built (`config.check_factory`)."""
    faiss = load_faiss()
    probe = VectorIndex(dim, factory)
    if not probe.index.is_trained:
        return
    first = 8
    size = first + 8
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((size, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(1, size + 1, dtype=np.int64)
    half = first
    try:
        probe.add(ids[:half], vectors[:half])
        probe.add(ids[half:], vectors[half:])
        _, found = probe.search(vectors[:2], min(5, size), params)
        if (found[:, 0] < 0).all():
            raise RuntimeError("a search found nothing")
        kept = ids[2:]
        stored = stored_vectors(probe, kept)
        probe.remove(ids[:2])
        merged = VectorIndex(dim, factory)
        merged.add(kept, stored)
        faiss.deserialize_index(faiss.serialize_index(merged.index))
    except (RuntimeError, ValueError, InvalidInput) as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        reason = re.sub(r"Error in .*? at \S+:\d+: ", "", reason).rsplit("Error: ", 1)[-1]  # FAISS's C++ frames
        raise InvalidConfig(f"index {factory!r} cannot be used by a collection: {reason}") from None
