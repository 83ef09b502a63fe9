"""IVF segments whose inverted lists live on disk and are searched memory-mapped.

Chosen with the factory prefix `OnDisk,` (`RAG_INDEX_FACTORY=OnDisk,IVF4096,SQ8`), recorded in
the collection's config like any factory string. Each segment of such a collection is two files
besides its BM25 file: `seg-N.faiss`, a small header (quantizer, codec, list sizes and offsets,
the data file's name), and `seg-N.ivfdata`, the lists in the layout of FAISS's
`OnDiskInvertedLists` (each list's codes, then its ids; what `faiss.contrib.ondisk.merge_ondisk`
writes). Readers open the header read-only; FAISS maps the data file, so only the lists a query
probes are read.

The IVF is trained once, on the first segment large enough to train it (smaller segments stay
`Flat`, as for any IVF here); every later segment is filled into a copy of that trained index
(`OnDiskIndex.like`), so all on-disk segments of a collection share one quantizer and codec, and
merging them is a list-by-list concatenation on disk (`write_lists`): memory holds one list at a
time, never the index. A writer holds its batch in memory, the quantizer, and the pages of the
segments it streams through.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from indexes.atomic import atomic_replace
from indexes.errors import InvalidInput
from indexes.faisslib import load_faiss
from indexes.vector import VectorIndex

log = logging.getLogger(__name__)

DATA_SUFFIX = ".ivfdata"


def data_file(header: Path) -> Path:
    """The lists of the segment whose header is `header` (`seg-N.faiss` -> `seg-N.ivfdata`)."""
    return header.with_suffix(DATA_SUFFIX)


def _list_arrays(invlists: object, list_no: int, code_size: int) -> tuple[np.ndarray, np.ndarray]:
    faiss = load_faiss()
    n = invlists.list_size(list_no)  # type: ignore[attr-defined]
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros((0, code_size), dtype=np.uint8)
    ids = faiss.rev_swig_ptr(invlists.get_ids(list_no), n).copy()  # type: ignore[attr-defined]
    codes = faiss.rev_swig_ptr(invlists.get_codes(list_no), n * code_size).copy().reshape(n, code_size)  # type: ignore[attr-defined]
    return ids.astype(np.int64), codes


class OnDiskIndex(VectorIndex):
    """`VectorIndex` over an IVF whose lists are (once saved) on disk.

    Built: an in-memory IVF (trained on its first `add`, or a `like` copy of a trained one).
    Loaded: the saved header with its lists memory-mapped, read-only; `path` names the header."""

    def __init__(self, dim: int, factory: str = "Flat", index: Any = None) -> None:
        super().__init__(dim, factory, index)
        if load_faiss().try_extract_index_ivf(self.index) is None:
            raise InvalidInput(f"{factory!r}: only IVF indexes can live on disk (e.g. 'OnDisk,IVF1024,SQ8')")
        self.path: Path | None = None

    @classmethod
    def like(cls, template: OnDiskIndex) -> OnDiskIndex:
        """An empty in-memory IVF with `template`'s trained quantizer and codec."""
        faiss = load_faiss()
        if template.path is None:
            raise InvalidInput("the template of an on-disk segment must be a saved segment")
        empty = faiss.read_index(str(template.path), faiss.IO_FLAG_SKIP_IVF_DATA)
        ivf = faiss.extract_index_ivf(empty)
        lists = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
        ivf.replace_invlists(lists, True)
        lists.this.disown()  # the index owns and frees them now
        ivf.ntotal = empty.ntotal = 0
        return cls(template.dim, template.factory, index=empty)

    @classmethod
    def load(cls, path: Path, factory: str, mmap: bool = False) -> OnDiskIndex:  # noqa: ARG003 (always mapped)
        faiss = load_faiss()
        try:
            index = faiss.read_index(str(path), faiss.IO_FLAG_READ_ONLY)
        except RuntimeError:
            # The header names its data file by absolute path; a moved data home finds it beside
            # the header instead (FAISS says so on stdout, hence not the first choice).
            index = faiss.read_index(str(path), faiss.IO_FLAG_ONDISK_SAME_DIR | faiss.IO_FLAG_READ_ONLY)
        loaded = cls(index.d, factory, index=index)
        loaded.read_only = True
        loaded.path = path
        return loaded

    def save(self, path: Path) -> None:
        """Write this index's lists to `path`'s data file, then the header (both atomically)."""
        if not self.index.is_trained:
            raise InvalidInput("an on-disk IVF index is trained by its first batch; nothing was added yet")
        write_lists(path, self, [(self, None)])
        # Continue from the saved segment: memory-mapped, the lists leave memory.
        saved = OnDiskIndex.load(path, self.factory)
        self.index, self.path, self.read_only = saved.index, path, True

    def lists(self) -> object:
        return load_faiss().extract_index_ivf(self.index).invlists


def write_lists(path: Path, like: OnDiskIndex, parts: Sequence[tuple[OnDiskIndex, np.ndarray | None]]) -> int:
    """One on-disk segment at `path` holding the lists of `parts` (each minus the ids it drops),
    concatenated list by list; `like` gives the quantizer and codec every part shares. The data
    file is written and renamed first, then the header that names it. Returns the vector count."""
    faiss = load_faiss()
    ivf = faiss.extract_index_ivf(like.index)
    nlist, code_size = int(ivf.nlist), int(ivf.code_size)
    for part, _ in parts:
        other = faiss.extract_index_ivf(part.index)
        if int(other.nlist) != nlist or int(other.code_size) != code_size:
            raise InvalidInput("on-disk segments with different IVF layouts cannot be merged list by list")
    sources = [(part.lists(), drop if drop is not None and len(drop) else None) for part, drop in parts]
    data = data_file(path)
    partial = data.with_name(data.name + ".tmp")
    sizes = np.zeros(nlist, dtype=np.uint64)
    with partial.open("wb") as out:
        for list_no in range(nlist):
            id_parts, code_parts = [], []
            for lists, drop in sources:
                ids, codes = _list_arrays(lists, list_no, code_size)
                if drop is not None and len(ids):
                    keep = ~np.isin(ids, drop)
                    ids, codes = ids[keep], codes[keep]
                id_parts.append(ids)
                code_parts.append(codes)
            ids, codes = np.concatenate(id_parts), np.vstack(code_parts)
            # OnDiskInvertedLists layout with capacity == size: the list's codes, then its ids.
            out.write(np.ascontiguousarray(codes, dtype=np.uint8).tobytes())
            out.write(np.ascontiguousarray(ids, dtype=np.int64).tobytes())
            sizes[list_no] = len(ids)
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, data)
    total = int(sizes.sum())
    lists = faiss.OnDiskInvertedLists(nlist, code_size, str(data.resolve()))
    lists.totsize = total * (code_size + 8)
    lists.set_all_lists_sizes(faiss.swig_ptr(sizes))
    empty = faiss.read_index(str(like.path), faiss.IO_FLAG_SKIP_IVF_DATA) if like.path else faiss.clone_index(like.index)
    if like.path is None:
        empty.reset()
    header_ivf = faiss.extract_index_ivf(empty)
    header_ivf.replace_invlists(lists, True)
    lists.this.disown()
    header_ivf.ntotal = empty.ntotal = total
    atomic_replace(path, lambda tmp: faiss.write_index(empty, tmp), crash_point="faiss:before-rename")
    log.info("on-disk IVF segment %s: %d vectors", path.name, total)
    return total
