"""What the writer needs of a collection, and a collection of its store, as structural protocols.

`store` imports `collection`, which imports `writer`: each module depends only on those below it,
and these protocols (which import none of the three) say what the lower ones use of the upper.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from indexes.config import CollectionConfig
from indexes.errors import CollectionNotFound
from indexes.keyword import KeywordSpec


class StoreHandle(Protocol):
    """The catalog as a collection uses it (`indexes.store.Store`)."""

    home: Path
    home_id: str
    engine: Engine
    sessions: sessionmaker[Session]
    mmap: bool


class CollectionHandle(Protocol):
    """One collection as its writer uses it (`indexes.collection.Collection`)."""

    store: StoreHandle
    id: int
    name: str
    config: CollectionConfig
    folder: Path
    keyword_spec: KeywordSpec

    def gone(self) -> CollectionNotFound: ...

    def require_owner(self, owner: str | None) -> None: ...

    def embedding_text(self, title: str, text: str) -> str: ...
