"""Named crash points for crash-consistency tests: `RAG_FAILPOINT=name` kills the process there.

The process exits with `os._exit` (no cleanup, no flush), as close to `kill -9` as Python gets,
at an exact step of the write protocol, so every interleaving can be tested deterministically.
`RAG_FAILPOINT_RAISE=name` (or `name@subject`, for one subject only) raises a `RagError` there
instead: an ordinary failure the process survives and must clean up after.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from indexes.errors import RagError


def failpoint(name: str, subjects: Iterable[str] = ()) -> None:
    if os.environ.get("RAG_FAILPOINT") == name:
        os._exit(137)
    raised = os.environ.get("RAG_FAILPOINT_RAISE")
    if raised:
        point, _, subject = raised.partition("@")
        if point == name and (not subject or subject in subjects):
            raise RagError(f"failpoint {name} ({subject or 'every write'})")
