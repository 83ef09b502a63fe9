"""The one progress helper: a tqdm bar on a terminal, a silent counter everywhere else."""

from __future__ import annotations

import sys
from typing import Any


class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, unit: str, desc: str, enabled: bool = True) -> Any:
    """A bar that shows rate (`passage/s`) on stderr when enabled and stderr is a terminal."""
    if not enabled or not sys.stderr.isatty():
        return _Silent()
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=desc, leave=False, dynamic_ncols=True, smoothing=0.1)
