"""PDF text extraction compared on generated PDFs whose structure is known (tests/pdf_samples.py):
two columns drawn in row-major order, a header and footer on every page, a ruled table.

    python bench/pdf.py [--pages 40] [--repeat 3]   # pip install pymupdf pdfplumber to compare them too

Per library: reading order (adjacent paragraph tags in order), paragraphs extracted whole (each
paragraph's words contiguous), running header/footer lines left in the text, table rows kept on
one line with their cells in order, and pages per second (median of --repeat runs; the ratio is
against pypdf, the previous parser).
"""

from __future__ import annotations

import argparse
import io
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.pdf_samples import FOOTER, HEADER, Sample, two_column  # noqa: E402


def pypdf_text(data: bytes) -> str:
    from pypdf import PdfReader

    return "\n\n".join(page.extract_text() or "" for page in PdfReader(io.BytesIO(data)).pages)


def pymupdf_text(data: bytes, sort: bool = False) -> str:
    import pymupdf

    with pymupdf.open(stream=data, filetype="pdf") as doc:
        return "\n\n".join(page.get_text("text", sort=sort) for page in doc)


def pypdfium2_text(data: bytes) -> str:
    import pypdfium2

    doc = pypdfium2.PdfDocument(data)
    try:
        return "\n\n".join(page.get_textpage().get_text_bounded() for page in doc)
    finally:
        doc.close()


def pdfplumber_text(data: bytes) -> str:
    import pdfplumber

    with pdfplumber.open(io.BytesIO(data)) as pdf:
        return "\n\n".join(page.extract_text() or "" for page in pdf.pages)


def rag_text(data: bytes) -> str:
    from ingest.pdf import load_pdf

    return next(load_pdf(data, "sample.pdf")).text


PARSERS: dict[str, Callable[[bytes], str]] = {
    "pypdf 7 (previous parser; BSD-3)": pypdf_text,
    "PyMuPDF 2, get_text() (AGPL-3.0)": pymupdf_text,
    "PyMuPDF 2, get_text(sort=True) (AGPL-3.0)": lambda d: pymupdf_text(d, sort=True),
    "pypdfium2 5 (Apache-2.0 / BSD-3)": pypdfium2_text,
    "pdfplumber 0.11 extract_text() (MIT)": pdfplumber_text,
    "rag ingest/pdf.py: pypdfium2 runs + rules + XY-cut": rag_text,
}


def _flat(text: str) -> str:
    return " ".join(text.split())


def score(text: str, sample: Sample) -> dict[str, float]:
    positions = [text.find(p.split(".")[0] + ".") for p in sample.paragraphs]
    pairs = list(zip(positions, positions[1:]))
    in_order = sum(0 <= a < b for a, b in pairs) / max(len(pairs), 1)
    flat = _flat(text)
    whole = sum(_flat(p) in flat for p in sample.paragraphs) / len(sample.paragraphs)
    footer = re.escape(FOOTER.split("{")[0].strip())
    leaks = text.count(HEADER) + len(re.findall(footer + r"\s*\d+", text))
    lines = text.splitlines()
    rows = sum(
        any(re.search(r"\W+".join(re.escape(c) for c in row), line) for line in lines) for row in sample.table_rows
    ) / max(len(sample.table_rows), 1)
    return {"order": in_order, "whole": whole, "leaks": leaks, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=40, help="pages of the speed sample")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    quality = two_column(pages=3)
    speed = two_column(pages=args.pages)
    print(f"quality sample: {quality.pages} pages, {len(quality.paragraphs)} paragraphs, {len(quality.table_rows)} table rows; "
          f"speed sample: {speed.pages} pages\n")
    print("| parser | reading order | paragraphs whole | header/footer lines left | table rows as rows | pages/s | x pypdf |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    baseline = None
    for name, extract in PARSERS.items():
        try:
            result = score(extract(quality.data), quality)
        except ImportError as exc:  # PyMuPDF and pdfplumber are not dependencies: pip install them to compare
            print(f"| {name} | not installed ({exc.name}) | | | | | |")
            continue
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            extract(speed.data)
            times.append(time.perf_counter() - started)
        rate = speed.pages / statistics.median(times)
        baseline = baseline or rate
        print(
            f"| {name} | {result['order']:.2f} | {result['whole']:.2f} | {result['leaks']:.0f} of {2 * quality.pages} | "
            f"{result['rows']:.2f} | {rate:.1f} | x{rate / baseline:.2f} |"
        )


if __name__ == "__main__":
    main()
