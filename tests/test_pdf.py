"""The PDF parser keeps structure on real PDFs made by reportlab: two columns read column by
column (though the content stream interleaves them), running header and footer gone, a ruled table
as rows, page starts, and clear errors for broken or encrypted files."""

from __future__ import annotations

import io

import pytest
import reportlab  # noqa: F401  (makes the test PDFs; the dev extra: missing, the suite fails)

from ingest.loaders import LoadError, load_bytes
from tests.pdf_samples import FOOTER, HEADER, two_column


@pytest.fixture(scope="module")
def sample():  # type: ignore[no-untyped-def]
    return two_column(pages=3)


@pytest.fixture(scope="module")
def document(sample):  # type: ignore[no-untyped-def]
    [doc] = load_bytes(sample.data, "/papers/two-column.pdf")
    return doc


def test_columns_are_read_in_order_and_each_paragraph_is_whole(sample, document) -> None:  # type: ignore[no-untyped-def]
    flat = " ".join(document.text.split())
    positions = [flat.find(" ".join(p.split())) for p in sample.paragraphs]
    assert all(pos >= 0 for pos in positions), "a paragraph was split or interleaved with the other column"
    assert positions == sorted(positions)
    assert document.text.startswith("On the Ordering of Extracted Text\n\nP01.")


def test_running_header_and_footer_are_dropped(sample, document) -> None:  # type: ignore[no-untyped-def]
    assert HEADER not in document.text
    assert FOOTER.split(" {")[0] not in document.text  # "Page"
    assert "Page 2 of 3" not in document.text


def test_a_ruled_table_becomes_text_rows(sample, document) -> None:  # type: ignore[no-untyped-def]
    lines = document.text.splitlines()
    for row in sample.table_rows:
        assert " | ".join(row) in lines


def test_page_starts_point_at_each_page(sample, document) -> None:  # type: ignore[no-untyped-def]
    starts = document.metadata["page_starts"]
    assert len(starts) == sample.pages and starts[0] == 0
    assert document.text[starts[1] :].startswith("P07.")  # page 2 begins with its first paragraph
    assert document.text[starts[2] :].startswith("P13.")
    assert document.title == "Synthetic two-column article"


def test_a_one_page_document_keeps_its_top_and_bottom_lines() -> None:
    one = two_column(pages=1, table=False)
    [doc] = load_bytes(one.data, "one.pdf")
    assert HEADER in doc.text  # a header needs to repeat to be recognised as one


def test_broken_and_password_protected_pdfs_are_clear_errors() -> None:
    from pypdf import PdfWriter

    with pytest.raises(LoadError, match="not a readable PDF"):
        list(load_bytes(b"%PDF-1.4\n1 0 obj garbage", "broken.pdf"))
    writer = PdfWriter()
    writer.add_blank_page(200, 200)
    writer.encrypt("secret")
    buffer = io.BytesIO()
    writer.write(buffer)
    with pytest.raises(LoadError, match="encrypted"):
        list(load_bytes(buffer.getvalue(), "locked.pdf"))


def flate_bomb_pdf(inflated_bytes: int) -> bytes:
    """A one-page PDF whose content stream is a small Flate stream that inflates to
    `inflated_bytes` of PDF comments: what PDFium would inflate in memory to draw the page."""
    import zlib

    content = zlib.compress(b"%" + b" " * (inflated_bytes - 2) + b"\n", 9)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(content) + content + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def test_a_pdf_whose_streams_inflate_past_the_limit_is_refused_before_it_is_rendered() -> None:
    from ingest.loaders import InputLimits

    limits = InputLimits(max_expanded_bytes=8 << 20)
    bomb = flate_bomb_pdf(40 << 20)
    assert len(bomb) < 100_000  # 40 MiB of content in under 100 kB
    with pytest.raises(LoadError, match=r"bomb\.pdf: expands to over the 8 MiB limit when decompressed \(RAG_MAX_EXPANDED_MB\)"):
        load_bytes(bomb, "bomb.pdf", limits)
    # the same file under a limit it fits is parsed (and has no text): the check counts, it does not guess
    with pytest.raises(LoadError, match="no text could be extracted"):
        load_bytes(bomb, "bomb.pdf", InputLimits(max_expanded_bytes=64 << 20))
