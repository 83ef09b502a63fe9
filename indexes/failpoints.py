"""Named crash points for crash-consistency tests: `RAG_FAILPOINT=name` kills the process there.

The process exits with `os._exit` (no cleanup, no flush), as close to `kill -9` as Python gets,
at an exact step of the write protocol, so every interleaving can be tested deterministically.
"""

from __future__ import annotations

import os


def failpoint(name: str) -> None:
    if os.environ.get("RAG_FAILPOINT") == name:
        os._exit(137)
