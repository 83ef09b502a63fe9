"""Atomic file replacement: a reader opens either the old file or the new one, never half of one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from indexes.failpoints import failpoint


def atomic_replace(path: Path, produce: Callable[[str], None], crash_point: str | None = None) -> None:
    """`produce(tmp)` writes the new content to a temporary file beside `path`; it is then
    fsynced, renamed over `path`, and the folder fsynced so the rename survives a power cut."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        produce(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        if crash_point:
            failpoint(crash_point)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
