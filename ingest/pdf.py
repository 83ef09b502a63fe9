"""PDF text that keeps its structure: reading order across columns, no running headers or
footers, tables as text rows.

pypdfium2 (PDFium, Apache-2.0/BSD-3) gives the page's text runs with their boxes (`count_rects`,
`get_text_bounded`) and its vector paths; the layout is ours and geometric, so it does not depend
on the order a producer wrote the content stream in:

1. Ruled tables: thin horizontal and vertical paths that cross form a grid; text runs inside it
   become rows, cells joined by " | ". (Tables without rules are read as text blocks.)
2. Runs in the top or bottom 12% of the page whose text, digits ignored, recurs on at least half
   of the pages (two at least) are running headers and footers, and are dropped.
3. Recursive XY-cut orders what remains: split the region at its widest empty horizontal or
   vertical band, read top-to-bottom or left-to-right, recurse. A title over two columns is cut
   off first, then the gutter splits the columns.

Page texts are joined with blank lines; `metadata["page_starts"]` keeps each page's offset.
`bench/pdf.py` compares this with pypdf, PyMuPDF, pdfplumber and raw pypdfium2 on generated PDFs.
"""

from __future__ import annotations

import re
import threading
import unicodedata
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indexes.errors import MissingDependency
from indexes.types import Document
from ingest.limits import LoadError

MARGIN_BAND = 0.12
RULE_WIDTH = 3.0  # points: a path thinner than this is a rule
# PDFium is not thread-safe (pypdfium2 says so); API ingestion jobs run in threads.
_PDFIUM = threading.Lock()


@dataclass(frozen=True)
class Box:
    """A text run or a table, with its text and page coordinates (top grows downwards)."""

    x0: float
    top: float
    x1: float
    bottom: float
    text: str
    size: float
    table: bool = False


def _gaps(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Empty intervals between the union of `spans`, as (start, end)."""
    spans = sorted(spans)
    gaps: list[tuple[float, float]] = []
    reach = spans[0][1]
    for start, end in spans[1:]:
        if start > reach:
            gaps.append((reach, start))
        reach = max(reach, end)
    return gaps


def xy_cut(boxes: list[Box]) -> list[list[Box]]:
    """Reading order as blocks (lists of lines): recursive XY-cut at the widest empty band."""
    if len(boxes) <= 1:
        return [boxes] if boxes else []
    horizontal = _gaps([(b.top, b.bottom) for b in boxes])
    vertical = _gaps([(b.x0, b.x1) for b in boxes])
    best_h = max(horizontal, key=lambda g: g[1] - g[0], default=None)
    best_v = max(vertical, key=lambda g: g[1] - g[0], default=None)
    h_width = best_h[1] - best_h[0] if best_h else 0.0
    v_width = best_v[1] - best_v[0] if best_v else 0.0
    line_gap = 0.6 * min(b.size for b in boxes)
    if best_v is not None and v_width >= h_width and v_width > line_gap:
        cut = best_v[1]
        return xy_cut([b for b in boxes if b.x1 <= cut]) + xy_cut([b for b in boxes if b.x1 > cut])
    if best_h is not None and h_width > line_gap:
        cut = best_h[1]
        return xy_cut([b for b in boxes if b.bottom <= cut]) + xy_cut([b for b in boxes if b.bottom > cut])
    # Lines set closer than a paragraph break: one block, top to bottom.
    return [sorted(boxes, key=lambda b: (b.top, b.x0))]


def _signature(text: str) -> str:
    return re.sub(r"\d+", "#", " ".join(text.lower().split()))


def running_lines(pages: Sequence[tuple[float, list[Box]]]) -> set[str]:
    """Signatures of text runs in the top/bottom band that recur on half the pages (two at least)."""
    counts: Counter[str] = Counter()
    for height, boxes in pages:
        band = {
            _signature(b.text)
            for b in boxes
            if not b.table and (b.bottom < MARGIN_BAND * height or b.top > (1 - MARGIN_BAND) * height)
        }
        counts.update(band)
    needed = max(2, (len(pages) + 1) // 2)
    return {sig for sig, count in counts.items() if count >= needed}


def page_text(boxes: list[Box]) -> str:
    """Blocks separated by blank lines, lines by newlines."""
    return "\n\n".join("\n".join(b.text for b in block) for block in xy_cut(boxes))


def _clean(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def _merge(values: list[float], tolerance: float = 2.0) -> list[float]:
    merged: list[float] = []
    for value in sorted(values):
        if not merged or value - merged[-1] > tolerance:
            merged.append(value)
    return merged


def ruled_tables(rules: list[tuple[float, float, float, float]], boxes: list[Box]) -> tuple[list[Box], list[Box]]:
    """Grids of crossing rules -> table boxes (rows of " | "-joined cells); returns (tables, rest)."""
    horizontal = [r for r in rules if r[3] - r[1] <= RULE_WIDTH and r[2] - r[0] > 4 * RULE_WIDTH]
    vertical = [r for r in rules if r[2] - r[0] <= RULE_WIDTH and r[3] - r[1] > 4 * RULE_WIDTH]
    groups: list[list[tuple[float, float, float, float]]] = []
    for rule in horizontal + vertical:  # connected components of touching rules
        touching = [g for g in groups if any(_touch(rule, other) for other in g)]
        merged = [rule] + [r for g in touching for r in g]
        groups = [g for g in groups if g not in touching] + [merged]
    tables: list[Box] = []
    rest = list(boxes)
    for group in groups:
        xs = _merge([(r[0] + r[2]) / 2 for r in group if r[2] - r[0] <= RULE_WIDTH])
        ys = _merge([(r[1] + r[3]) / 2 for r in group if r[3] - r[1] <= RULE_WIDTH])
        if len(xs) < 2 or len(ys) < 2:
            continue
        inside = [b for b in rest if xs[0] <= (b.x0 + b.x1) / 2 <= xs[-1] and ys[0] <= (b.top + b.bottom) / 2 <= ys[-1]]
        if not inside:
            continue
        cells: dict[tuple[int, int], list[Box]] = {}
        for b in inside:
            row = sum(y < (b.top + b.bottom) / 2 for y in ys) - 1
            col = sum(x < (b.x0 + b.x1) / 2 for x in xs) - 1
            cells.setdefault((row, col), []).append(b)
        rows = []
        for row in range(len(ys) - 1):
            texts = [" ".join(b.text for b in sorted(cells.get((row, col), []), key=lambda b: (b.top, b.x0))) for col in range(len(xs) - 1)]
            if any(texts):
                rows.append(" | ".join(texts))
        tables.append(Box(xs[0], ys[0], xs[-1], ys[-1], "\n".join(rows), min(b.size for b in inside), table=True))
        rest = [b for b in rest if b not in inside]
    return tables, rest


def _touch(a: tuple[float, float, float, float], b: tuple[float, float, float, float], slack: float = 2.0) -> bool:
    return a[0] <= b[2] + slack and b[0] <= a[2] + slack and a[1] <= b[3] + slack and b[1] <= a[3] + slack


def _page_boxes(page: Any, pdfium: Any) -> tuple[float, list[Box]]:
    """The page's text runs (and tables), in top-down coordinates."""
    width, height = page.get_size()
    text_page = page.get_textpage()
    boxes: list[Box] = []
    for i in range(text_page.count_rects()):
        left, bottom, right, top = text_page.get_rect(i)
        text = " ".join(text_page.get_text_bounded(left, bottom, right, top).split())
        if text:
            boxes.append(Box(left, height - top, right, height - bottom, text, top - bottom))
    rules = []
    for obj in page.get_objects(filter=(pdfium.raw.FPDF_PAGEOBJ_PATH,)):
        left, bottom, right, top = obj.get_bounds()
        rules.append((left, height - top, right, height - bottom))
    tables, rest = ruled_tables(rules, boxes)
    return height, tables + rest


_STREAM = re.compile(rb"stream\r?\n")
_STEP = 1 << 16


def inflated_bytes(data: bytes, limit: int) -> int:
    """What the file's Flate streams inflate to, counted in steps and never past `limit`.

    PDFium inflates a page's content streams in memory to draw it, so a 100 kB file can cost
    gigabytes. Every `stream` keyword is tried as the start of a zlib stream (objects inside
    object streams included, since those are streams too); what does not inflate is another
    filter or not a stream at all, and fails on its first bytes. Input and output both move in
    64 kB steps, so memory stays flat and a file costs CPU up to the limit at most.
    Returns more than `limit` as soon as the total passes it.
    """
    total = 0
    for match in _STREAM.finditer(data):
        inflate = zlib.decompressobj()
        position, pending = match.end(), b""
        try:
            while not inflate.eof:
                if not pending:
                    if position >= len(data):
                        break
                    pending, position = data[position : position + _STEP], position + _STEP
                total += len(inflate.decompress(pending, _STEP))
                pending = inflate.unconsumed_tail
                if total > limit:
                    return total
        except zlib.error:
            continue
    return total


def read_pdf(data: bytes, name: str) -> tuple[list[str], str]:
    """Each page's text in reading order, and the document title from the PDF's metadata."""
    try:
        import pypdfium2 as pdfium
    except ImportError as exc:
        raise MissingDependency("PDF needs pypdfium2: pip install 'rag[formats]'") from exc
    with _PDFIUM:
        try:
            document = pdfium.PdfDocument(data)
        except pdfium.PdfiumError as exc:
            if getattr(exc, "err_code", None) == pdfium.raw.FPDF_ERR_PASSWORD:
                raise LoadError(f"{name}: the PDF is encrypted (a password is needed to open it)") from None
            raise LoadError(f"{name}: not a readable PDF ({exc})") from None
        try:
            pages = [_page_boxes(document[i], pdfium) for i in range(len(document))]
            title = str(document.get_metadata_dict().get("Title", "") or "")
        except (pdfium.PdfiumError, ValueError, OSError) as exc:
            raise LoadError(f"{name}: not a readable PDF ({type(exc).__name__}: {exc})") from None
        finally:
            document.close()
    running = running_lines(pages) if len(pages) > 1 else set()
    texts = [page_text([b for b in boxes if b.table or _signature(b.text) not in running]) for _, boxes in pages]
    return [_clean(t) for t in texts], _clean(title)


def load_pdf(data: bytes, name: str) -> Iterator[Document]:
    pages, title = read_pdf(data, name)
    page_starts: list[int] = []
    offset = 0
    for text in pages:
        page_starts.append(offset)
        offset += len(text) + 2
    yield Document(
        source=name, text="\n\n".join(pages), title=title or Path(name).stem, metadata={"page_starts": page_starts}
    )
