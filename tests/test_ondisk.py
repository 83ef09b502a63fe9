"""An on-disk IVF collection (`OnDisk,IVF...`): filled batch by batch through the store's write
protocol, merged on disk, searched memory-mapped, and always equal to exact search over the
same vectors when every list is probed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from indexes.encoder import EncoderSpec
from indexes.errors import InvalidInput
from indexes.ondisk import OnDiskIndex
from indexes.store import CollectionConfig, NewDocument, Store
from indexes.types import Chunk, Document
from indexes.vector import VectorIndex
from rag.runtime import Runtime
from rag.settings import Settings
from tests.conftest import SCIFACT

DIM = 32
NLIST = 8


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _doc(name: str, vectors: np.ndarray) -> NewDocument:
    text = " ".join(f"{name}-{i}." for i in range(len(vectors)))
    chunks = [Chunk(text=f"{name}-{i}.", start=0, end=0, ordinal=i) for i in range(len(vectors))]
    return NewDocument(Document(source=name, text=text), name, chunks, vectors)


def test_ondisk_collection_is_built_in_batches_and_searched_memory_mapped(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    config = CollectionConfig(encoder=EncoderSpec(), dim=DIM, index_factory=f"OnDisk,IVF{NLIST},Flat")
    store = Store(tmp_path / "home", mmap=True)
    collection = store.create_collection("big", config)
    truth: dict[str, np.ndarray] = {}
    with collection.writer():
        for batch in range(4):  # four shards, each merged with the lists already on disk
            docs = {f"d{batch}-{j}": _unit(rng, 10) for j in range(10)}
            collection.write([_doc(name, v) for name, v in docs.items()])
            truth.update(docs)
        # A replacement and a deletion in the same batch: their old vectors leave the disk lists.
        truth["d0-0"] = _unit(rng, 3)
        gone = collection.find_documents("d1-1")
        collection.write([_doc("d0-0", truth["d0-0"])], delete_ids=gone)
        del truth["d1-1"]
    assert collection.check().consistent
    folder = collection.folder
    assert len(list(folder.glob("vectors.*.ivfdata"))) == 2  # the current generation and the previous one

    reader = Store(tmp_path / "home", mmap=True).collection("big")
    index = reader.vectors()
    assert isinstance(index, OnDiskIndex) and index.read_only
    assert index.count() == sum(len(v) for v in truth.values())
    index.tune(f"nprobe={NLIST}")  # every list probed: the IVF is exact
    names = list(truth)
    matrix = np.vstack([truth[n] for n in names])
    owner = [n for n in names for _ in range(len(truth[n]))]
    queries = _unit(rng, 5)
    found = reader.search(queries, 5)
    for query, hits in zip(queries, found):
        best = np.argsort(-(matrix @ query))[:5]
        assert [(h.source, h.ordinal) for h in hits] == [
            (owner[i], i - owner.index(owner[i])) for i in best
        ]
        assert np.allclose([h.score for h in hits], (matrix @ query)[best], atol=1e-5)


def test_an_ondisk_index_can_be_created_from_its_factory_string(tmp_path: Path) -> None:
    assert isinstance(VectorIndex(DIM, "OnDisk,IVF4,Flat"), OnDiskIndex)
    assert not isinstance(VectorIndex(DIM, "IVF4,Flat"), OnDiskIndex)
    with pytest.raises(InvalidInput, match="only IVF"):
        VectorIndex(DIM, "OnDisk,HNSW32")


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
