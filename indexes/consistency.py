"""Does the published generation hold what SQL says it should? Read-only: changes nothing.

The invariant: every chunk of a document visible in the published generation has exactly one
vector in the generation's FAISS segments and one entry in its BM25 segments, and every segment
the manifest names can be read. Vectors of removed documents (tombstones) may remain in a segment
until it is compacted; SQL filters them from results, and the count is reported.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from indexes.schema import DocumentRow
from indexes.snapshot import Snapshot


@dataclass
class ConsistencyReport:
    generation: int = 0
    sql_chunks: int = 0
    faiss_vectors: int = 0
    keyword_chunks: int = 0
    tombstones: int = 0
    missing_in_faiss: list[int] = field(default_factory=list)
    missing_in_keyword: list[int] = field(default_factory=list)
    duplicated: list[int] = field(default_factory=list)
    unreadable_segments: list[str] = field(default_factory=list)
    unpublished_documents: int = 0

    @property
    def consistent(self) -> bool:
        return not self.problems()

    def problems(self) -> list[str]:
        """Each disagreement in words: a failed check always says why."""
        found = []
        if self.unreadable_segments:
            found.append(f"{len(self.unreadable_segments)} index segments cannot be read: {', '.join(self.unreadable_segments)}")
        if self.missing_in_faiss:
            found.append(f"{len(self.missing_in_faiss)} visible chunks have no vector")
        if self.missing_in_keyword:
            found.append(f"{len(self.missing_in_keyword)} visible chunks are missing from the keyword index")
        if self.duplicated:
            found.append(f"{len(self.duplicated)} chunk ids are held by more than one segment")
        return found

    def to_dict(self) -> dict[str, Any]:
        return {
            "consistent": self.consistent,
            "generation": self.generation,
            "sql_chunks": self.sql_chunks,
            "faiss_vectors": self.faiss_vectors,
            "keyword_chunks": self.keyword_chunks,
            "tombstones": self.tombstones,
            "missing_in_faiss": len(self.missing_in_faiss),
            "missing_in_keyword": len(self.missing_in_keyword),
            "duplicated": len(self.duplicated),
            "unreadable_segments": list(self.unreadable_segments),
            "unpublished_documents": self.unpublished_documents,
            "problems": self.problems(),
        }


def check(snapshot: Snapshot, unreadable: list[str]) -> ConsistencyReport:
    visible = snapshot.visible_chunk_ids()
    vector_ids = Counter(int(i) for i in snapshot.vector_ids())
    keyword_ids = {int(i) for s in snapshot.segments for i in s.terms.ids}
    with snapshot.sessions() as session:
        unpublished = session.scalar(
            select(func.count()).where(
                DocumentRow.collection_id == snapshot.collection_id, DocumentRow.added_gen > snapshot.generation
            )
        )
    return ConsistencyReport(
        generation=snapshot.generation,
        sql_chunks=len(visible),
        faiss_vectors=sum(1 for i in vector_ids if i in visible),
        keyword_chunks=len(keyword_ids & visible),
        tombstones=sum(1 for i in vector_ids if i not in visible),
        missing_in_faiss=sorted(visible - set(vector_ids)),
        missing_in_keyword=sorted(visible - keyword_ids),
        duplicated=sorted(i for i, n in vector_ids.items() if n > 1),
        unreadable_segments=list(unreadable),
        unpublished_documents=int(unpublished or 0),
    )
