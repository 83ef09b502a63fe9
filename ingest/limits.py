"""What one input file may amount to, and the error a file that is over it (or unreadable) raises.

Its own module so every format's reader (`loaders`, `pdf`, `wordml`) can raise `LoadError` and read
the limits without importing `loaders`, which imports them: one direction, no cycle.
"""

from __future__ import annotations

from dataclasses import dataclass

from indexes.errors import RagError


class LoadError(RagError):
    code = "load_error"


MIB = 1024 * 1024


def mib(n_bytes: float) -> str:
    """Bytes as MiB for messages: 52428800 -> '50', 1.5 MiB -> '1.5'."""
    return f"{n_bytes / MIB:.1f}".removesuffix(".0")


@dataclass(frozen=True)
class InputLimits:
    """What one input file may amount to. Each limit names the setting that raises it."""

    max_file_bytes: int = 50 * MIB  # RAG_MAX_FILE_MB: bytes as stored or uploaded
    max_expanded_bytes: int = 256 * MIB  # RAG_MAX_EXPANDED_MB: bytes after decompression (.gz, .docx, PDF streams)
    max_records: int = 1_000_000  # RAG_MAX_RECORDS: documents (lines, paragraphs) per file
    max_document_chars: int = 20_000_000  # RAG_MAX_DOCUMENT_CHARS: characters per document
    max_json_depth: int = 32  # RAG_MAX_JSON_DEPTH: nesting of a record's metadata

    def check_size(self, size: int, name: str) -> None:
        if size > self.max_file_bytes:
            raise LoadError(
                f"{name}: {mib(size)} MiB is over the {mib(self.max_file_bytes)} MiB limit (RAG_MAX_FILE_MB); "
                "split it or raise the limit"
            )

    def expanded_error(self, name: str) -> LoadError:
        return LoadError(
            f"{name}: expands to over the {mib(self.max_expanded_bytes)} MiB limit when decompressed "
            "(RAG_MAX_EXPANDED_MB); split it or raise the limit"
        )

    def records_error(self, name: str) -> LoadError:
        return LoadError(f"{name}: more than {self.max_records:,} records (RAG_MAX_RECORDS); split it or raise the limit")

    def chars_error(self, name: str) -> LoadError:
        """A single document found over the character limit while it is still being read."""
        return LoadError(
            f"{name}: over the {self.max_document_chars:,} characters limit (RAG_MAX_DOCUMENT_CHARS); "
            "split it or raise the limit"
        )
