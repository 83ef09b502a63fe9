"""How a document's source is shown to someone who is not on the ingesting machine.

A document ingested from disk keeps its absolute path as `source`: it is the identity that makes
re-ingestion incremental. Callers of the API must not learn server paths, so ingestion also stores
a label relative to the ingest root (`metadata["source_label"]`): `corpus/sub/a.txt` for a file
found by walking the folder `/srv/data/corpus`, `a.txt` for a file named on its own, with the
record part (`#id`) of multi-record files kept. Uploads and API documents are labels already
(`upload/NAME`, `api/ID`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path, PurePath
from typing import Any

from indexes.metadata import LABEL_KEY
from indexes.types import Document

__all__ = ["LABEL_KEY", "ingest_label", "labelled", "public_source"]


def ingest_label(path: Path, roots: Sequence[Path]) -> str:
    """`path` relative to the parent of the deepest walked folder holding it, else its name."""
    best: Path | None = None
    for root in roots:
        if path.is_relative_to(root) and (best is None or len(root.parts) > len(best.parts)):
            best = root
    if best is None:
        return path.name
    return (Path(best.name) / path.relative_to(best)).as_posix()


def labelled(doc: Document, file_source: str, label: str) -> Document:
    """`doc` with its label (`label` plus the record part of its source) in the metadata."""
    record = doc.source[len(file_source):] if doc.source.startswith(file_source) else ""
    return dataclasses.replace(doc, metadata={**doc.metadata, LABEL_KEY: label + record})


def public_source(source: str, metadata: dict[str, Any]) -> str:
    """What an API caller sees as the source: the stored label, else no more than the file name."""
    label = metadata.get(LABEL_KEY)
    if isinstance(label, str) and label:
        return label
    if not os.path.isabs(source.split("#", 1)[0]):
        return source  # upload/NAME, api/ID: labels from the start
    path, hash_, record = source.partition("#")
    return PurePath(path).name + hash_ + record
