"""Every supported format becomes documents; every bad file becomes a clear error."""

from __future__ import annotations

import gzip
import io
import json

import pytest

from ingest.loaders import MIB, InputLimits, LoadError, load_bytes, parse
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
    [doc] = load_bytes(b"line one\r\nline two\n", "/c/notes.txt")
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
        (b'{"id": 1, "text": "ok"}\n{broken', "/c/bad.jsonl", "skipped 1 bad record(s), kept 1: line 2: invalid JSON"),
        (b'{"id": 1}', "/c/notext.jsonl", "no usable record; line 1: missing a string field 'text'"),
        (b'{"data": [1]}', "/c/squad.json", "data[0] must be an object"),
        (b'{"data": [{"title": "T", "paragraphs": [{"qas": []}]}]}', "/c/noctx.json", "data[0].paragraphs[0] has no 'context'"),
        (b'{"data": [{"title": "T", "paragraphs": [{"context": 3}]}]}', "/c/intctx.json", "'context' must be a string"),
        (b'{"data": [{"title": "T", "paragraphs": "x"}]}', "/c/strpar.json", "data[0].paragraphs must be a list"),
        (b'{"data": [{"title": ["T"], "paragraphs": []}]}', "/c/ttl.json", "data[0].title must be a string"),
        (b"[" * 100_000 + b"]" * 100_000, "/c/deep.json", "nested too deeply"),
        (b'{"a": 1}', "/c/other.json", "JSON must be SQuAD"),
        (gzip.compress(b'{"text": "x"}')[:-6], "/c/cut.jsonl.gz", "not a valid gzip file"),
        (b"not gzip at all", "/c/fake.json.gz", "not a valid gzip file"),
        (b"\x00\x01\x02binary", "/c/bin.txt", "NUL bytes"),
        (b"data", "/c/image.png", "unsupported file type"),
    ],
)
def test_bad_files_raise_a_load_error_that_names_the_file(data: bytes, name: str, message: str) -> None:
    with pytest.raises(LoadError) as caught:
        load_bytes(data, name)
    assert message in str(caught.value)
    assert name.rsplit("/", 1)[-1] in str(caught.value)


def test_a_jsonl_file_keeps_its_good_lines_and_names_the_bad_ones() -> None:
    data = b"\n".join(
        [
            b'{"id": "a", "text": "Radium glows."}',
            b"{broken",
            b'{"id": "b", "text": "caf\xe9"}',
            b"[1, 2]",
            b'{"id": "c", "text": "Polonium too."}',
            b'{"id": "d", "title": {"x": 1}, "text": "bad title"}',
        ]
    )
    parsed = parse(data, "/c/mixed.jsonl")
    assert [d.external_id for d in parsed.documents] == ["a", "c"]
    assert [s.split(":")[0] for s in parsed.skipped] == ["line 2", "line 3", "line 4", "line 6"]
    problem = parsed.problem("/c/mixed.jsonl")
    assert problem is not None and problem.startswith("/c/mixed.jsonl: skipped 4 bad record(s), kept 2: line 2: invalid JSON")


def test_a_json_list_keeps_its_good_records() -> None:
    parsed = parse(json.dumps([{"id": 1, "text": "ok"}, {"id": 2}, 7]).encode(), "/c/list.json")
    assert [d.external_id for d in parsed.documents] == ["1"]
    assert parsed.skipped == ["record 2: missing a string field 'text'", "record 3: expected a JSON object, not int"]


def _bomb(line: bytes, members: int) -> bytes:
    """Concatenated gzip members of 16 MiB of `line` each: compressed once, repeated."""
    return gzip.compress(line * (16 * MIB // len(line)), 9) * members


def test_a_decompression_bomb_is_refused_while_it_streams() -> None:
    import resource

    bomb = _bomb(json.dumps({"text": "x" * 4000}).encode() + b"\n", 70)  # 1.5 MB, 1.1 GiB unpacked
    assert len(bomb) < 5 * MIB
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(LoadError, match=r"bomb.jsonl.gz: expands to over the 256 MiB limit when decompressed \(RAG_MAX_EXPANDED_MB\)"):
        parse(bomb, "/c/bomb.jsonl.gz")
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 64, f"peak RSS grew by {grown_mib:.0f} MiB"


def test_input_limits_name_their_setting() -> None:
    limits = InputLimits(max_file_bytes=MIB, max_expanded_bytes=2 * MIB, max_records=3, max_document_chars=100, max_json_depth=3)
    with pytest.raises(LoadError, match=r"big.txt: 1.5 MiB is over the 1 MiB limit \(RAG_MAX_FILE_MB\)"):
        parse(b"x" * (3 * MIB // 2), "/c/big.txt", limits)
    with pytest.raises(LoadError, match=r"more than 3 records \(RAG_MAX_RECORDS\)"):
        parse(b'{"text": "a"}\n' * 4, "/c/many.jsonl", limits)
    with pytest.raises(LoadError, match=r"long.txt: 101 characters, over the 100 limit \(RAG_MAX_DOCUMENT_CHARS\)"):
        parse(b"y" * 101, "/c/long.txt", limits)
    parsed = parse(b'{"id": "ok", "text": "a"}\n{"id": "deep", "text": "b", "metadata": {"a": {"b": {"c": {"d": 1}}}}}', "/c/d.jsonl", limits)
    assert [d.external_id for d in parsed.documents] == ["ok"]
    assert parsed.skipped == ["record deep: metadata nested deeper than 3 levels (RAG_MAX_JSON_DEPTH)"]
    with pytest.raises(LoadError, match=r"d.docx: expands to over the 2 MiB limit"):
        parse(make_docx(["z" * (3 * MIB)]), "/c/d.docx", limits)


def test_concatenated_gzip_members_all_load() -> None:
    data = gzip.compress(b'{"id": 1, "text": "one"}\n') + gzip.compress(b'{"id": 2, "text": "two"}\n')
    assert [d.text for d in load_bytes(data, "/c/two.jsonl.gz")] == ["one", "two"]


# Saved pages of the kinds users ingest, written out here: a documentation page (header, sidebar and
# footer navigation, an admonition and paragraphs in divs), a wiki article (text in divs and
# sections, a <br>) and an article with a table and a figure caption.
def _page(name: str) -> bytes:
    from tests import html_pages

    page: bytes = getattr(html_pages, name)
    return page


@pytest.mark.parametrize(
    ("page", "kept", "dropped"),
    [
        (
            "DOCS_PAGE",
            ["Configuring the index", "The index factory string decides how vectors are stored",
             "An exact Flat index compares the query with every stored vector", "Choosing nprobe",
             "nprobe sets how many inverted lists a query visits", "Start with nprobe equal to one percent",
             "rag ingest docs/ --index IVF1024,Flat"],
            ["API reference", "Installation", "Copyright 2026", "Privacy policy", "analytics", ".nav"],
        ),
        (
            "WIKI_PAGE",
            ["Marie Salomea Skłodowska-Curie was a Polish", "Early life", "born in Warsaw",
             "She studied at a clandestine university", "Discoveries", "discovery of polonium"],
            ["Random article", "last edited on", "Privacy policy"],
        ),
        (
            "TABLE_PAGE",
            ["Radioactive elements discovered by the Curies", "isolated two new elements", "Polonium", "Po", "Radium",
             "The shed on rue Lhomond where radium was first isolated.", "glow faintly blue"],
            ["Subscribe to our newsletter", "trackPageView", "Elements"],
        ),
    ],
    ids=["docs", "wiki", "table"],
)
def test_html_keeps_the_main_text_wherever_the_page_holds_it_and_drops_boilerplate(
    page: str, kept: list[str], dropped: list[str]
) -> None:
    [doc] = load_bytes(_page(page), f"/c/{page.lower()}.html")
    for text in kept:
        assert text in doc.text, (text, doc.text)
    for text in dropped:
        assert text not in doc.text, (text, doc.text)


def test_html_text_in_divs_sections_and_captions_is_kept() -> None:
    html = (
        b"<html><body><div>Alpha paragraph.</div><p>Beta paragraph.</p><section>Gamma<br>Delta</section>"
        b"<figure><figcaption>Epsilon caption.</figcaption></figure><table><tr><td>cell</td></tr></table></body></html>"
    )
    [doc] = load_bytes(html, "/c/issue.html")
    for text in ("Alpha paragraph.", "Beta paragraph.", "Gamma", "Delta", "Epsilon caption.", "cell"):
        assert text in doc.text, (text, doc.text)
