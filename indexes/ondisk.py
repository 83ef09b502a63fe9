"""IVF indexes whose inverted lists live on disk and are searched memory-mapped.

Chosen with the factory prefix `OnDisk,` (`RAG_INDEX_FACTORY=OnDisk,IVF4096,SQ8`), recorded in
the collection's config like any factory string. The IVF is trained on the first write batch
(a sample of it, as for any IVF here); each later batch is a shard: it is encoded in memory,
then merged list by list with the lists on disk into a new data file, in the layout of FAISS's
`OnDiskInvertedLists` (codes then ids per list, what `faiss.contrib.ondisk.merge_ondisk` writes).
The small header file (`vectors.faiss`: quantizer, list offsets, data file name) is then
renamed into place, so readers see one generation or the next, as with every other index; they
open it memory-mapped and only the lists a query probes are read.

A writer holds one batch in memory, never the index: peak memory is the batch, the quantizer,
and the pages of the old generation it streams through. Each batch rewrites the data file
(sequential I/O, like the atomic save of an in-memory index), so large corpora want large
`RAG_BATCH_CHUNKS`.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

import numpy as np

from indexes.atomic import atomic_replace
from indexes.errors import InvalidInput
from indexes.vector import VectorIndex

log = logging.getLogger(__name__)

_DATA_SUFFIX = ".ivfdata"


def _faiss():  # type: ignore[no-untyped-def]
    import faiss

    return faiss


def _list_arrays(invlists: object, list_no: int, code_size: int) -> tuple[np.ndarray, np.ndarray]:
    faiss = _faiss()
    n = invlists.list_size(list_no)  # type: ignore[attr-defined]
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros((0, code_size), dtype=np.uint8)
    ids = faiss.rev_swig_ptr(invlists.get_ids(list_no), n).copy()  # type: ignore[attr-defined]
    codes = faiss.rev_swig_ptr(invlists.get_codes(list_no), n * code_size).copy().reshape(n, code_size)  # type: ignore[attr-defined]
    return ids.astype(np.int64), codes


class OnDiskIndex(VectorIndex):
    """`VectorIndex` over an on-disk IVF: `base` is the saved generation (memory-mapped,
    read-only), `index` the in-memory IVF that takes this batch's additions, `removed` the base
    ids this batch deletes. `save` merges the three into the next generation."""

    def __init__(self, dim: int, factory: str = "Flat", index: object | None = None) -> None:
        super().__init__(dim, factory, index)
        faiss = _faiss()
        if faiss.try_extract_index_ivf(self.index) is None:
            raise InvalidInput(f"{factory!r}: only IVF indexes can live on disk (e.g. 'OnDisk,IVF1024,SQ8')")
        self.base: object | None = None
        self.removed: set[int] = set()
        self._base_ids: np.ndarray | None = None

    @classmethod
    def open(cls, path: Path, factory: str) -> OnDiskIndex:
        faiss = _faiss()
        try:
            base = faiss.read_index(str(path), faiss.IO_FLAG_READ_ONLY)
        except RuntimeError:
            # The data file is named by its absolute path; a moved data home finds it beside the
            # header instead (FAISS says so on stdout, hence not the first choice).
            base = faiss.read_index(str(path), faiss.IO_FLAG_ONDISK_SAME_DIR | faiss.IO_FLAG_READ_ONLY)
        empty = faiss.read_index(str(path), faiss.IO_FLAG_SKIP_IVF_DATA)
        ivf = faiss.extract_index_ivf(empty)
        lists = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
        ivf.replace_invlists(lists, True)
        lists.this.disown()  # the index owns and frees them now
        ivf.ntotal = empty.ntotal = 0
        opened = cls(base.d, factory, index=empty)
        opened.base = base
        opened.read_only = True
        return opened

    # -- the VectorIndex contract -------------------------------------------------------------
    def remove(self, ids: np.ndarray | list[int]) -> int:
        wanted = np.asarray(list(ids), dtype=np.int64)
        removed = super().remove(wanted) if self.index.ntotal else 0
        if self.base is not None and len(wanted):
            hit = set(np.intersect1d(self._base_id_array(), wanted).tolist()) - self.removed
            self.removed |= hit
            removed += len(hit)
        return removed

    def count(self) -> int:
        base = int(self.base.ntotal) if self.base is not None else 0  # type: ignore[attr-defined]
        return base - len(self.removed) + int(self.index.ntotal)

    def ids(self) -> np.ndarray:
        fresh = super().ids()
        if self.base is None:
            return fresh
        base = self._base_id_array()
        if self.removed:
            base = base[~np.isin(base, np.fromiter(self.removed, dtype=np.int64))]
        return np.concatenate([base, fresh])

    def tune(self, params: str) -> None:
        super().tune(params)
        if params and self.base is not None:
            _faiss().ParameterSpace().set_index_parameters(self.base, params)

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.base is None:
            return super().search(vectors, k)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim == 1:
            vectors = vectors[None, :]
        k = max(1, min(k, max(self.count(), 1)))
        scores, ids = self.base.search(vectors, k + len(self.removed))  # type: ignore[attr-defined]
        if not self.removed and not self.index.ntotal:
            return scores[:, :k], ids[:, :k]
        if self.index.ntotal:
            more_scores, more_ids = self.index.search(vectors, k)
            scores, ids = np.hstack([scores, more_scores]), np.hstack([ids, more_ids])
        if self.removed:
            gone = np.isin(ids, np.fromiter(self.removed, dtype=np.int64))
            scores, ids = np.where(gone, -np.inf, scores), np.where(gone, -1, ids)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)

    def save(self, path: Path) -> None:
        """Merge base (minus removed) and this batch into a new data file, then rename the header."""
        faiss = _faiss()
        if not self.index.is_trained:
            raise InvalidInput("an on-disk IVF index is trained by its first batch; nothing was added yet")
        ivf = faiss.extract_index_ivf(self.index)
        nlist, code_size = int(ivf.nlist), int(ivf.code_size)
        base_lists = faiss.extract_index_ivf(self.base).invlists if self.base is not None else None
        drop = np.fromiter(self.removed, dtype=np.int64) if self.removed else None
        data = path.parent / f"{path.stem}.{uuid.uuid4().hex[:12]}{_DATA_SUFFIX}"
        sizes = np.zeros(nlist, dtype=np.uint64)
        with data.open("wb") as out:
            for list_no in range(nlist):
                ids, codes = _list_arrays(ivf.invlists, list_no, code_size)
                if base_lists is not None:
                    old_ids, old_codes = _list_arrays(base_lists, list_no, code_size)
                    if drop is not None and len(old_ids):
                        keep = ~np.isin(old_ids, drop)
                        old_ids, old_codes = old_ids[keep], old_codes[keep]
                    ids, codes = np.concatenate([old_ids, ids]), np.vstack([old_codes, codes])
                # OnDiskInvertedLists layout with capacity == size: the list's codes, then its ids.
                out.write(np.ascontiguousarray(codes, dtype=np.uint8).tobytes())
                out.write(np.ascontiguousarray(ids, dtype=np.int64).tobytes())
                sizes[list_no] = len(ids)
            out.flush()
            os.fsync(out.fileno())
        lists = faiss.OnDiskInvertedLists(nlist, code_size, str(data))
        lists.totsize = int(sizes.sum()) * (code_size + 8)
        lists.set_all_lists_sizes(faiss.swig_ptr(sizes))
        header = faiss.clone_index(self.index)
        header.reset()
        header_ivf = faiss.extract_index_ivf(header)
        header_ivf.replace_invlists(lists, True)
        lists.this.disown()
        header_ivf.ntotal = header.ntotal = int(sizes.sum())
        atomic_replace(path, lambda tmp: faiss.write_index(header, tmp), crash_point="faiss:before-rename")
        self._retire_generations(path, data)
        # Continue from the new generation: this batch is on disk now, memory holds none of it.
        reopened = OnDiskIndex.open(path, self.factory)
        self.base, self.index = reopened.base, reopened.index
        self.removed, self._base_ids = set(), None
        self.read_only = False
        log.info("on-disk IVF %s: %d vectors in %s", self.factory, int(sizes.sum()), data.name)

    # -- helpers --------------------------------------------------------------------------------
    def _base_id_array(self) -> np.ndarray:
        if self._base_ids is None:
            faiss = _faiss()
            base_ivf = faiss.extract_index_ivf(self.base)
            lists = base_ivf.invlists
            parts = [
                faiss.rev_swig_ptr(lists.get_ids(l), lists.list_size(l)).astype(np.int64)
                for l in range(base_ivf.nlist)
                if lists.list_size(l)
            ]
            self._base_ids = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        return self._base_ids

    @staticmethod
    def _retire_generations(path: Path, current: Path) -> None:
        """Delete data files older than the previous generation (a reader that has just read the
        previous header can still open its data); an interrupted save's file goes too."""
        generations = sorted(path.parent.glob(f"{path.stem}.*{_DATA_SUFFIX}"), key=lambda p: p.stat().st_mtime_ns)
        keep = {current}
        older = [g for g in generations if g != current]
        if older:
            keep.add(older[-1])
        for stale in generations:
            if stale not in keep:
                stale.unlink(missing_ok=True)

