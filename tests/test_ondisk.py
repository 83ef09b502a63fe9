"""An on-disk IVF collection (`OnDisk,IVF...`): one segment per write batch, all sharing one
trained quantizer, merged list by list on disk, searched memory-mapped, and always equal to exact
search over the same vectors when every list is probed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from indexes.config import SearchParams
from indexes.encoder import EncoderSpec
from indexes.errors import InvalidInput
from indexes.ondisk import OnDiskIndex
from indexes.store import CollectionConfig, NewDocument, Store
from indexes.types import Chunk, Document
from indexes.vector import training_size
from rag.runtime import Runtime
from rag.settings import Settings
from tests.conftest import REPO, SCIFACT

DIM = 32
NLIST = 8


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _doc(name: str, vectors: np.ndarray) -> NewDocument:
    text = " ".join(f"{name}-{i}." for i in range(len(vectors)))
    chunks = [Chunk(text=f"{name}-{i}.", start=0, end=0, ordinal=i) for i in range(len(vectors))]
    return NewDocument(Document(source=name, text=text), name, chunks, vectors)


def _segment_files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.name.startswith("seg-")}


def test_ondisk_collection_is_built_in_segments_merged_on_disk_and_searched_memory_mapped(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    config = CollectionConfig(encoder=EncoderSpec(), dim=DIM, index_factory=f"OnDisk,IVF{NLIST},Flat")
    store = Store(tmp_path / "home", mmap=True)
    collection = store.create_collection("big", config)
    truth: dict[str, np.ndarray] = {}
    with collection.writer() as writer:
        # Too few vectors to train IVF8 (39 per list): an exact Flat segment, as for any IVF.
        small = {f"s-{j}": _unit(rng, 10) for j in range(10)}
        writer.write([_doc(n, v) for n, v in small.items()])
        truth.update(small)
        assert [s.info.factory for s in writer.segments] == ["IDMap2,Flat"]
        # Enough to train: the first on-disk segment; its quantizer serves every later one.
        first = {f"d0-{j}": _unit(rng, 10) for j in range(40)}
        writer.write([_doc(n, v) for n, v in first.items()])
        truth.update(first)
        for batch in range(1, 6):  # 100 vectors each: on disk at once, with the shared quantizer
            docs = {f"d{batch}-{j}": _unit(rng, 10) for j in range(10)}
            writer.write([_doc(n, v) for n, v in docs.items()])
            truth.update(docs)
        assert len(writer.segments) == 7
        assert [s.info.factory for s in writer.segments[1:]] == [f"OnDisk,IVF{NLIST},Flat"] * 6
        # The eighth segment of one size tier: all eight are merged into one on-disk segment, the
        # on-disk ones list by list, the Flat one's vectors encoded by the shared quantizer.
        docs = {f"d6-{j}": _unit(rng, 10) for j in range(10)}
        writer.write([_doc(n, v) for n, v in docs.items()])
        truth.update(docs)
        assert len(writer.segments) == 1 and isinstance(writer.segments[0].vectors, OnDiskIndex)
        # A replacement and a deletion in the same batch: tombstones in the merged segment.
        truth["d0-0"] = _unit(rng, 3)
        gone = collection.find_documents("d1-1", by="source")
        writer.write([_doc("d0-0", truth["d0-0"])], delete_ids=gone)
        del truth["d1-1"]
        names = [s.info.name for s in writer.segments]
    assert collection.check().consistent
    # Each on-disk segment is a header and a data file, both named by the manifest: nothing else stays.
    assert _segment_files(collection.folder) == {
        f"{n}{suffix}" for n in names for suffix in (".faiss", ".bm25.npz", ".ivfdata")
    }

    reader = Store(tmp_path / "home", mmap=True).collection("big")
    snapshot = reader.snapshot()
    assert all(isinstance(s.vectors, OnDiskIndex) and s.vectors.read_only for s in snapshot.segments)
    assert snapshot.vector_count() - snapshot.tombstones() == sum(len(v) for v in truth.values())
    names = list(truth)
    matrix = np.vstack([truth[n] for n in names])
    owner = [n for n in names for _ in range(len(truth[n]))]
    queries = _unit(rng, 5)
    found = reader.search(queries, 5, SearchParams(nprobe=NLIST))  # every list probed: the IVF is exact
    for query, hits in zip(queries, found):
        best = np.argsort(-(matrix @ query))[:5]
        assert [(h.source, h.ordinal) for h in hits] == [(owner[i], i - owner.index(owner[i])) for i in best]
        assert np.allclose([h.score for h in hits], (matrix @ query)[best], atol=1e-5)


@pytest.mark.parametrize("factory", [f"IVF{NLIST},Flat", f"OnDisk,IVF{NLIST},Flat"])
def test_stored_vectors_are_read_back_from_trained_ivf_segments(tmp_path: Path, factory: str) -> None:
    """What MMR asks a collection for: an IVF has no id -> vector map until one is built."""
    rng = np.random.default_rng(1)
    store = Store(tmp_path / "home", mmap=True)
    collection = store.create_collection("ivf", CollectionConfig(encoder=EncoderSpec(), dim=DIM, index_factory=factory))
    truth = {f"d-{j}": _unit(rng, 8) for j in range(40)}  # 320 vectors: enough to train IVF8 at once
    with collection.writer() as writer:
        writer.write([_doc(n, v) for n, v in truth.items()])
    reader = Store(tmp_path / "home", mmap=True).collection("ivf")
    assert reader.stats()["segment_factories"] == [factory]
    ids = reader.snapshot().vector_ids()
    rows = reader.passage_rows(ids.tolist())
    stored = reader.stored_vectors(ids.tolist())
    assert sorted(stored) == sorted(ids.tolist())
    for chunk_id, vector in stored.items():
        source, ordinal = rows[chunk_id][6], rows[chunk_id][5]
        assert np.abs(vector - truth[source][ordinal]).max() < 1e-6  # IVF,Flat stores vectors exactly


def test_an_ondisk_factory_is_validated_as_the_ivf_it_wraps() -> None:
    assert isinstance(OnDiskIndex(DIM, "OnDisk,IVF4,Flat"), OnDiskIndex)
    assert training_size(DIM, f"OnDisk,IVF{NLIST},Flat") == training_size(DIM, f"IVF{NLIST},Flat") == 39 * NLIST
    with pytest.raises(InvalidInput, match="only IVF"):
        CollectionConfig(encoder=EncoderSpec(), dim=DIM, index_factory="OnDisk,HNSW32").validate()
    with pytest.raises(InvalidInput, match="not a valid FAISS factory"):
        CollectionConfig(encoder=EncoderSpec(), dim=DIM, index_factory="OnDisk,IVFx,Flat").validate()


def test_ingest_into_an_ondisk_ivf_collection(tmp_path: Path, encoder) -> None:  # type: ignore[no-untyped-def]
    corpus = tmp_path / "scifact.jsonl"
    with (SCIFACT / "corpus.jsonl").open(encoding="utf-8") as source:
        lines = [next(source) for _ in range(30)]
    corpus.write_text("".join(lines), encoding="utf-8")
    runtime = Runtime(Settings(home=tmp_path / "home", index_factory="OnDisk,IVF4,Flat", batch_chunks=32))
    collection = runtime.writable_collection("c")
    report = runtime.ingestor(collection).ingest_paths([str(corpus)])
    assert (report.documents_added, report.errors) == (30, [])
    assert runtime.collection("c").check().consistent
    assert runtime.collection("c").stats()["index_factory"] == "OnDisk,IVF4,Flat"
    retriever = runtime.retriever("c", "dense")
    import json

    first = json.loads(lines[0])
    hits = retriever.retrieve(first["title"], 20)
    assert first["_id"] in {h.source.rsplit("#", 1)[1] for h in hits}


_CRASHING_WRITER = """
import os, sys
import numpy as np
from indexes.encoder import EncoderSpec
from indexes.store import CollectionConfig, Store
from tests.test_ondisk import _doc, _unit

rng = np.random.default_rng(0)
store = Store(sys.argv[1])
collection = store.create_collection("big", CollectionConfig(encoder=EncoderSpec(), dim=32, index_factory="OnDisk,IVF8,Flat"))
with collection.writer() as writer:
    writer.write([_doc(f"a-{j}", _unit(rng, 10)) for j in range(40)])  # trains: the first on-disk segment
    os.environ["RAG_FAILPOINT"] = "write:after-faiss-save"
    writer.write([_doc(f"b-{j}", _unit(rng, 10)) for j in range(10)])  # its files are written, then the crash
"""


def test_a_crash_before_publishing_an_ondisk_segment_leaves_no_data_file_behind(tmp_path: Path) -> None:
    home = tmp_path / "home"
    crashed = subprocess.run(
        [sys.executable, "-c", _CRASHING_WRITER, str(home)], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert crashed.returncode == 137, crashed.stderr[-2000:]
    collection = Store(home).collection("big")
    folder = collection.folder
    assert {"seg-000002.faiss", "seg-000002.ivfdata"} <= _segment_files(folder)  # written, never published
    assert collection.check().consistent  # readers see the published generation only
    with collection.writer() as writer:  # the next writer removes what no manifest names
        names = [s.info.name for s in writer.segments]
    assert names == ["seg-000001"]
    assert _segment_files(folder) == {"seg-000001.faiss", "seg-000001.bm25.npz", "seg-000001.ivfdata"}
    assert collection.snapshot().vector_count() == 400
