"""Real PDFs made with reportlab, whose structure a parser must keep: two columns (drawn in
row-major order in the content stream, as many layout programs emit them), a running header and
footer on every page, and a ruled table. Each paragraph starts with a numbered tag (`P01.`) so that
reading order can be checked from the extracted text.

Used by tests/test_pdf.py and bench/pdf.py.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

HEADER = "Annals of Synthetic Documents, Volume 12"
FOOTER = "Page {n} of {total}"
_WORDS = (
    "radium polonium uranium thorium actinium crystals magnetism temperature interference photography "
    "colour lattice electron nucleus isotope spectrum reactor laboratory sample measurement"
).split()


@dataclass(frozen=True)
class Sample:
    data: bytes
    paragraphs: list[str]  # in reading order
    table_rows: list[list[str]]
    pages: int


def paragraph(n: int, words: int = 42) -> str:
    body = " ".join(_WORDS[(n * 7 + i * 3) % len(_WORDS)] for i in range(words))
    return f"P{n:02d}. {body.capitalize()}."


def _wrap(text: str, width: float, font: str, size: float) -> list[str]:
    from reportlab.pdfbase.pdfmetrics import stringWidth

    lines: list[str] = []
    current = ""
    for word in text.split():
        trial = f"{current} {word}".strip()
        if stringWidth(trial, font, size) > width and current:
            lines.append(current)
            current = word
        else:
            current = trial
    if current:
        lines.append(current)
    return lines


def two_column(pages: int = 3, per_column: int = 3, table: bool = True) -> Sample:
    """A title over two columns on each page; lines are drawn left/right alternately, so the
    content stream interleaves the columns; the header and footer are drawn last."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    width, height = A4
    margin, gutter, size, leading = 56.0, 24.0, 10.0, 13.0
    column_width = (width - 2 * margin - gutter) / 2
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=A4)
    pdf.setTitle("Synthetic two-column article")
    order: list[str] = []
    rows = [["Element", "Discovered", "Symbol"], ["Polonium", "1898", "Po"], ["Radium", "1898", "Ra"], ["Actinium", "1899", "Ac"]]
    n = 1
    for page in range(1, pages + 1):
        top = height - margin - 30
        if page == 1:
            pdf.setFont("Helvetica-Bold", 16)
            pdf.drawString(margin, top, "On the Ordering of Extracted Text")
            top -= 34
        columns = []
        for _ in range(2):
            paragraphs = [paragraph(n + i) for i in range(per_column)]
            n += per_column
            order.extend(paragraphs)
            lines: list[str] = []
            for p in paragraphs:
                lines.extend(_wrap(p, column_width, "Helvetica", size))
                lines.append("")
            columns.append(lines)
        pdf.setFont("Helvetica", size)
        for i in range(max(len(c) for c in columns)):  # row-major: left line i, then right line i
            for c, lines in enumerate(columns):
                if i < len(lines) and lines[i]:
                    pdf.drawString(margin + c * (column_width + gutter), top - i * leading, lines[i])
        if table and page == pages:
            from reportlab.platypus import Table, TableStyle

            grid = Table(rows, colWidths=[120, 90, 70])
            grid.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.5, (0, 0, 0)), ("FONTSIZE", (0, 0), (-1, -1), size)]))
            _, table_height = grid.wrapOn(pdf, width, height)
            grid.drawOn(pdf, margin, margin + 40)
        pdf.setFont("Helvetica", 8)
        pdf.drawString(margin, height - margin + 10, HEADER)
        pdf.drawRightString(width - margin, margin - 20, FOOTER.format(n=page, total=pages))
        pdf.showPage()
    pdf.save()
    return Sample(data=buffer.getvalue(), paragraphs=order, table_rows=rows if table else [], pages=pages)
