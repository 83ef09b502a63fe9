"""Self-contained HTML evaluation reports (`rag eval … --report FILE.html`)."""

from __future__ import annotations

from pathlib import Path


def reports_dir(home: Path) -> Path:
    """Where reports are kept for `rag serve` to list: RAG_HOME/reports."""
    return Path(home) / "reports"
