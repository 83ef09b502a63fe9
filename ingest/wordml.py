"""DOCX text read as a stream: body paragraphs and table rows (cells joined by " | "), in order.

python-docx builds the whole XML tree and lets `zipfile` inflate a member in one call that trusts
the zip directory's declared size, so a member that understates its size, or a few MB of XML,
costs gigabytes. Here each member is inflated from its raw deflate data in 64 KiB steps, counted
against `InputLimits.max_expanded_bytes` whatever the directory says, and parsed incrementally
(lxml's pull parser, no entities, no network), dropping each run once its text is taken.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from indexes.types import Document
from ingest.limits import InputLimits, LoadError

W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_DC_TITLE = "{http://purl.org/dc/elements/1.1/}title"
_RELS = "{http://schemas.openxmlformats.org/package/2006/relationships}Relationship"
_STEP = 1 << 16
_LOCAL_HEADER = 30


class _Budget:
    """Inflated bytes left to a file, across its members."""

    def __init__(self, limits: InputLimits, name: str) -> None:
        self.left = limits.max_expanded_bytes
        self.limits = limits
        self.name = name

    def take(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise self.limits.expanded_error(self.name)


def _unreadable(name: str, why: str) -> LoadError:
    return LoadError(f"{name}: not a readable DOCX ({why})")


def _member(data: bytes, archive: zipfile.ZipFile, member: str, budget: _Budget) -> Iterator[bytes]:
    """A member's bytes in steps, inflated from its local data; the sizes the zip declares are not trusted."""
    try:
        info = archive.getinfo(member)
    except KeyError:
        raise _unreadable(budget.name, f"no {member}") from None
    if info.flag_bits & 0x1:
        raise _unreadable(budget.name, "it is encrypted")
    header = data[info.header_offset : info.header_offset + _LOCAL_HEADER]
    if len(header) < _LOCAL_HEADER or header[:4] != b"PK\x03\x04":
        raise _unreadable(budget.name, f"{member} has no local header")
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    start = info.header_offset + _LOCAL_HEADER + name_length + extra_length
    raw = memoryview(data)[start : start + info.compress_size]
    if info.compress_type == zipfile.ZIP_STORED:
        for position in range(0, len(raw), _STEP):
            budget.take(min(_STEP, len(raw) - position))
            yield bytes(raw[position : position + _STEP])
        return
    if info.compress_type != zipfile.ZIP_DEFLATED:
        raise _unreadable(budget.name, f"{member} uses an unsupported compression method ({info.compress_type})")
    inflate = zlib.decompressobj(-15)
    position = 0
    pending = b""
    try:
        while not inflate.eof:
            if not pending:
                if position >= len(raw):
                    raise _unreadable(budget.name, f"{member} is truncated")
                pending, position = bytes(raw[position : position + _STEP]), position + _STEP
            out = inflate.decompress(pending, _STEP)
            pending = inflate.unconsumed_tail
            budget.take(len(out))
            if out:
                yield out
    except zlib.error as exc:
        raise _unreadable(budget.name, f"{member}: {exc}") from None


def _pull_parser() -> Any:
    from lxml import etree

    return etree.XMLPullParser(events=("start", "end"), resolve_entities=False, no_network=True, load_dtd=False)


def _small_xml(data: bytes, archive: zipfile.ZipFile, member: str, budget: _Budget) -> Any:
    parser = _pull_parser()
    for piece in _member(data, archive, member, budget):
        parser.feed(piece)
    return parser.close()


def _targets(data: bytes, archive: zipfile.ZipFile, budget: _Budget) -> tuple[str, str | None]:
    """The main document part and the core properties part, as the package relationships name them."""
    main, core = "word/document.xml", None
    if "_rels/.rels" in archive.namelist():
        for rel in _small_xml(data, archive, "_rels/.rels", budget).iter(_RELS):
            kind, target = rel.get("Type", ""), rel.get("Target", "").lstrip("/")
            if kind.endswith("/officeDocument") and target:
                main = target
            elif kind.endswith("/core-properties") and target:
                core = target
    if core is None and "docProps/core.xml" in archive.namelist():
        core = "docProps/core.xml"
    return main, core


def _drop_done(element: Any) -> None:
    """Free an element whose text has been taken, and its earlier siblings (already taken too)."""
    element.clear()
    parent = element.getparent()
    if parent is not None:
        while element.getprevious() is not None:
            del parent[0]


def _blocks(pieces: Iterator[bytes], limits: InputLimits, name: str) -> list[str]:
    """Body paragraphs and table rows of the main part, in document order."""
    parser = _pull_parser()
    blocks: list[str] = []
    chars = 0
    paragraphs: list[list[str]] = []  # text of each open paragraph (text boxes nest them)
    cells: list[list[str]] = []  # paragraphs of each open table cell
    rows: list[list[str]] = []  # cells of each open table row

    def emit(text: str) -> None:
        nonlocal chars
        if cells:
            cells[-1].append(text)
        elif text.strip():
            chars += len(text) + 2
            if chars > limits.max_document_chars:
                raise limits.chars_error(name)
            blocks.append(text)

    def handle(event: str, element: Any) -> None:
        tag = element.tag
        if event == "start":
            if tag == W + "p":
                paragraphs.append([])
            elif tag == W + "tc":
                cells.append([])
            elif tag == W + "tr":
                rows.append([])
            return
        if tag == W + "t" and paragraphs:
            paragraphs[-1].append(element.text or "")
        elif tag in (W + "tab", W + "ptab") and paragraphs:
            paragraphs[-1].append("\t")
        elif tag in (W + "br", W + "cr") and paragraphs:
            paragraphs[-1].append("\n")
        elif tag == W + "noBreakHyphen" and paragraphs:
            paragraphs[-1].append("-")
        elif tag == W + "r":
            _drop_done(element)
        elif tag == W + "p" and paragraphs:
            text = "".join(paragraphs.pop())
            if paragraphs:  # a text box's paragraph: part of the paragraph around it
                paragraphs[-1].append(" " + text)
            else:
                emit(text)
                _drop_done(element)
        elif tag == W + "tc" and cells and rows:
            rows[-1].append("\n".join(cells.pop()).strip())
        elif tag == W + "tr" and rows:
            row = " | ".join(cell for cell in rows.pop() if cell)
            if row:
                emit(row)
            _drop_done(element)
        elif tag == W + "tbl" and not rows:
            _drop_done(element)

    try:
        for piece in pieces:
            parser.feed(piece)
            for event, element in parser.read_events():
                handle(event, element)
        parser.close()
        for event, element in parser.read_events():
            handle(event, element)
    except LoadError:
        raise
    except Exception as exc:  # lxml's XMLSyntaxError and its kin: the XML is malformed
        raise _unreadable(name, f"{type(exc).__name__}: {exc}") from None
    return blocks


def load_docx(data: bytes, name: str, limits: InputLimits) -> Iterator[Document]:
    """One document: the text of the main part's paragraphs and table rows, titled from the core properties."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise _unreadable(name, f"{type(exc).__name__}: {exc}") from None
    with archive:
        budget = _Budget(limits, name)
        try:
            main, core = _targets(data, archive, budget)
            title = ""
            if core is not None and core in archive.namelist():
                found = _small_xml(data, archive, core, budget).find(_DC_TITLE)
                title = (found.text or "").strip() if found is not None else ""
        except LoadError:
            raise
        except Exception as exc:  # malformed package XML
            raise _unreadable(name, f"{type(exc).__name__}: {exc}") from None
        blocks = _blocks(_member(data, archive, main, budget), limits, name)
    yield Document(source=name, text="\n\n".join(blocks), title=title or Path(name).stem)
