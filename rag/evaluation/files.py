"""Reading a labelled file (records, cases, qrels, queries) as text: a file that cannot be read or
is not UTF-8 is one `InvalidInput` naming it, the same for every `rag eval` command."""

from __future__ import annotations

from pathlib import Path

from indexes.errors import InvalidInput, not_utf8


def read_utf8(path: str | Path) -> str:
    try:
        return Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{path}: {not_utf8(exc)}") from None
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc}") from None
