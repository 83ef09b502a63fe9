"""Every supported format becomes documents; every bad file becomes a clear error."""

from __future__ import annotations

import gzip
import io
import json

import pytest

from ingest.loaders import LoadError, load_bytes
from tests.conftest import SQUAD_DEV


def make_pdf(lines: list[str], title: str = "") -> bytes:
    """A minimal, valid one-page PDF with real text objects (what pdf writers emit)."""
    stream = "BT /F1 12 Tf 72 720 Td 14 TL " + " ".join(f"({line}) Tj T*" for line in lines) + " ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        f"<< /Title ({title}) >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1"))
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    out.write(f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R /Info 6 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


def make_docx(paragraphs: list[str], title: str = "") -> bytes:
    import docx

    document = docx.Document()
    document.core_properties.title = title
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text = "Element"
    table.rows[0].cells[1].text = "Radium"
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def test_plain_text_keeps_its_text_and_normalises_newlines() -> None:
    [doc] = load_bytes("line one\r\nline two\n".encode(), "/c/notes.txt")
    assert doc.text == "line one\nline two\n"
    assert doc.title == "notes" and doc.source == "/c/notes.txt"


def test_markdown_title_comes_from_the_first_heading() -> None:
    [doc] = load_bytes(b"# Radium\n\nA radioactive element.", "/c/r.md")
    assert doc.title == "Radium"


def test_html_drops_scripts_and_styles_and_keeps_paragraphs() -> None:
    html = b"<html><head><title>T</title><style>p{}</style></head><body><p>First.</p><script>evil()</script><ul><li>Item</li></ul></body></html>"
    [doc] = load_bytes(html, "/c/p.html")
    assert doc.title == "T"
    assert "First." in doc.text and "Item" in doc.text
    assert "evil" not in doc.text and "p{}" not in doc.text


def test_pdf_text_is_extracted_with_page_starts() -> None:
    [doc] = load_bytes(make_pdf(["Polonium was discovered in 1898.", "Radium too."], title="Elements"), "/c/e.pdf")
    assert "Polonium was discovered in 1898." in doc.text
    assert doc.title == "Elements"
    assert doc.metadata["page_starts"] == [0]


def test_docx_paragraphs_and_tables_are_extracted() -> None:
    [doc] = load_bytes(make_docx(["Marie Curie won two Nobel Prizes."], title="Curie"), "/c/c.docx")
    assert "Marie Curie won two Nobel Prizes." in doc.text
    assert "Element | Radium" in doc.text
    assert doc.title == "Curie"


def test_jsonl_generic_and_beir_lines_become_one_document_each() -> None:
    lines = [
        {"id": "a1", "title": "A", "text": "alpha", "metadata": {"lang": "en"}},
        {"_id": "b2", "title": "B", "text": "beta"},
    ]
    docs = load_bytes("\n".join(json.dumps(x) for x in lines).encode(), "/c/x.jsonl")
    assert [(d.external_id, d.source, d.text) for d in docs] == [("a1", "/c/x.jsonl#a1", "alpha"), ("b2", "/c/x.jsonl#b2", "beta")]
    assert docs[0].metadata == {"lang": "en"}


def test_squad_json_gives_one_document_per_paragraph() -> None:
    docs = load_bytes(SQUAD_DEV.read_bytes(), str(SQUAD_DEV))
    assert len(docs) == 1048
    assert docs[0].title == "Super Bowl 50"


def test_gzipped_squad_json_is_read() -> None:
    payload = {"data": [{"title": "T", "paragraphs": [{"context": "Some context.", "qas": []}]}]}
    docs = load_bytes(gzip.compress(json.dumps(payload).encode()), "/c/s.json.gz")
    assert docs[0].text == "Some context."


@pytest.mark.parametrize(
    ("data", "name", "message"),
    [
        (b"", "/c/empty.txt", "the file is empty"),
        (b"   \n\n ", "/c/blank.md", "the file is empty"),
        (b"caf\xe9 au lait", "/c/latin1.txt", "not valid UTF-8"),
        (b"%PDF-1.4\n1 0 obj garbage", "/c/broken.pdf", "not a readable PDF"),
        (b"PK\x03\x04 not really a zip", "/c/broken.docx", "not a readable DOCX"),
        (b'{"id": 1, "text": "ok"}\n{broken', "/c/bad.jsonl", "bad.jsonl:2: invalid JSON"),
        (b'{"id": 1}', "/c/notext.jsonl", "missing a string field 'text'"),
        (b"\x00\x01\x02binary", "/c/bin.txt", "NUL bytes"),
        (b"data", "/c/image.png", "unsupported file type"),
    ],
)
def test_bad_files_raise_a_load_error_that_names_the_file(data: bytes, name: str, message: str) -> None:
    with pytest.raises(LoadError) as caught:
        load_bytes(data, name)
    assert message in str(caught.value)
    assert name.rsplit("/", 1)[-1] in str(caught.value)
