"""Files to `Document`s: one loader per format, chosen by extension.

Every loader reads bytes it was given, so the API can parse uploads without touching the server's
file system. A file that cannot be parsed raises `LoadError` with the reason; the caller reports
it by name and goes on with the rest.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from indexes.errors import MissingDependency, RagError
from indexes.types import Document
from ingest import pdf


class LoadError(RagError):
    code = "load_error"


SUPPORTED = (".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".docx", ".jsonl", ".json", ".json.gz")


def suffix_of(name: str) -> str:
    lowered = name.lower()
    for suffix in (".json.gz", ".jsonl.gz"):
        if lowered.endswith(suffix):
            return suffix
    return Path(lowered).suffix


def is_supported(name: str) -> bool:
    return suffix_of(name) in SUPPORTED or suffix_of(name) == ".jsonl.gz"


def _decode(data: bytes, name: str) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LoadError(
            f"{name}: not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); convert it to UTF-8"
        ) from None
    if "\x00" in text:
        raise LoadError(f"{name}: contains NUL bytes; it looks like a binary file, not text")
    return text


def _clean(text: str) -> str:
    """Normalise to NFC and unify newlines, so offsets are stable across platforms."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    return re.sub(r"[ \t]+\n", "\n", text)


def _title_from_markdown(text: str) -> str:
    match = re.search(r"^\s{0,3}#\s+(.+?)\s*#*\s*$", text, flags=re.MULTILINE)
    return match.group(1).strip() if match else ""


def load_text(data: bytes, name: str) -> Iterator[Document]:
    text = _clean(_decode(data, name))
    title = _title_from_markdown(text) if suffix_of(name) in (".md", ".markdown") else ""
    yield Document(source=name, text=text, title=title or Path(name).stem)


def load_html(data: bytes, name: str) -> Iterator[Document]:
    try:
        from bs4 import BeautifulSoup
    except ImportError as exc:
        raise MissingDependency("HTML needs beautifulsoup4 and lxml: pip install 'rag[formats]'") from exc
    soup = BeautifulSoup(data, "lxml")
    for tag in soup(["script", "style", "noscript", "template", "svg", "head"]):
        if tag.name == "head":
            continue
        tag.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    body = soup.body or soup
    blocks = [
        el.get_text(" ", strip=True)
        for el in body.find_all(["h1", "h2", "h3", "h4", "h5", "h6", "p", "li", "pre", "blockquote", "td", "th", "dt", "dd"])
        if not el.find_parent(["p", "li", "blockquote", "td", "th", "dd"])
    ]
    text = "\n\n".join(b for b in blocks if b) or body.get_text("\n", strip=True)
    yield Document(source=name, text=_clean(text), title=title or Path(name).stem)


def load_pdf(data: bytes, name: str) -> Iterator[Document]:
    try:
        from pypdf import PdfReader
        from pypdf.errors import PyPdfError
    except ImportError as exc:
        raise MissingDependency("PDF needs pypdf: pip install 'rag[formats]'") from exc
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            raise LoadError(f"{name}: the PDF is encrypted")
        pages = [page.extract_text() or "" for page in reader.pages]
        title = ""
        if reader.metadata and reader.metadata.title:
            title = str(reader.metadata.title)
    except LoadError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, OSError, RecursionError) as exc:
        raise LoadError(f"{name}: not a readable PDF ({type(exc).__name__}: {exc})") from None
    # Form feeds mark page breaks; page starts are kept so a citation can name its page.
    page_starts: list[int] = []
    parts: list[str] = []
    offset = 0
    for text in pages:
        page_starts.append(offset)
        cleaned = _clean(text)
        parts.append(cleaned)
        offset += len(cleaned) + 2
    yield Document(
        source=name, text="\n\n".join(parts), title=title or Path(name).stem, metadata={"page_starts": page_starts}
    )


def load_docx(data: bytes, name: str) -> Iterator[Document]:
    try:
        import docx
    except ImportError as exc:
        raise MissingDependency("DOCX needs python-docx: pip install 'rag[formats]'") from exc
    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:  # python-docx raises zipfile, KeyError and lxml errors alike
        raise LoadError(f"{name}: not a readable DOCX ({type(exc).__name__}: {exc})") from None
    blocks = [p.text for p in document.paragraphs if p.text.strip()]
    for table in document.tables:
        for row in table.rows:
            cells = [cell.text.strip() for cell in row.cells if cell.text.strip()]
            if cells:
                blocks.append(" | ".join(cells))
    title = document.core_properties.title or ""
    yield Document(source=name, text=_clean("\n\n".join(blocks)), title=title or Path(name).stem)


def _record_document(record: dict[str, Any], name: str, line: int) -> Document:
    """A generic `{"id","title","text","metadata"}` line or a BEIR `{"_id","title","text"}` line."""
    if not isinstance(record, dict):
        raise LoadError(f"{name}:{line}: expected a JSON object")
    text = record.get("text")
    if not isinstance(text, str):
        raise LoadError(f"{name}:{line}: missing a string field 'text'")
    ident = record.get("_id", record.get("id"))
    ident = str(ident) if ident is not None else str(line)
    metadata = record.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise LoadError(f"{name}:{line}: 'metadata' must be an object")
    return Document(
        source=f"{name}#{ident}",
        text=_clean(text),
        title=str(record.get("title") or ""),
        metadata=metadata,
        external_id=ident,
    )


def load_jsonl(data: bytes, name: str) -> Iterator[Document]:
    if name.lower().endswith(".gz"):
        data = _gunzip(data, name)
    text = _decode(data, name)
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LoadError(f"{name}:{number}: invalid JSON ({exc.msg})") from None
        yield _record_document(record, name, number)


def _gunzip(data: bytes, name: str) -> bytes:
    try:
        return gzip.decompress(data)
    except (OSError, EOFError) as exc:
        raise LoadError(f"{name}: not a valid gzip file ({exc})") from None


def load_json(data: bytes, name: str) -> Iterator[Document]:
    """SQuAD JSON (each paragraph a document) or a JSON list of generic records."""
    if name.lower().endswith(".gz"):
        data = _gunzip(data, name)
    try:
        payload = json.loads(_decode(data, name))
    except json.JSONDecodeError as exc:
        raise LoadError(f"{name}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    if isinstance(payload, dict) and isinstance(payload.get("data"), list):
        yield from squad_documents(payload, name)
    elif isinstance(payload, list):
        for number, record in enumerate(payload, start=1):
            yield _record_document(record, name, number)
    else:
        raise LoadError(f"{name}: JSON must be SQuAD ({{'data': [...]}}) or a list of {{'id','title','text'}} records")


def squad_documents(payload: dict[str, Any], name: str) -> Iterator[Document]:
    """One document per SQuAD paragraph, id `ARTICLE-INDEX`, titled by its article."""
    for a, article in enumerate(payload["data"]):
        title = str(article.get("title", "")).replace("_", " ")
        for p, paragraph in enumerate(article.get("paragraphs", [])):
            ident = f"{a:03d}-{p:03d}"
            yield Document(
                source=f"{name}#{ident}",
                text=paragraph["context"],
                title=title,
                metadata={"article": article.get("title", ""), "paragraph": p},
                external_id=ident,
            )


LOADERS: dict[str, Callable[[bytes, str], Iterator[Document]]] = {
    ".txt": load_text,
    ".md": load_text,
    ".markdown": load_text,
    ".html": load_html,
    ".htm": load_html,
    ".pdf": pdf.load_pdf,  # structure-keeping parser (pypdfium2): see ingest/pdf.py and bench/pdf.py
    ".docx": load_docx,
    ".jsonl": load_jsonl,
    ".jsonl.gz": load_jsonl,
    ".json": load_json,
    ".json.gz": load_json,
}


def load_bytes(data: bytes, name: str) -> list[Document]:
    """Parse one file's bytes; raises LoadError with the file name on any problem."""
    loader = LOADERS.get(suffix_of(name))
    if loader is None:
        raise LoadError(f"{name}: unsupported file type (supported: {', '.join(SUPPORTED)})")
    if not data.strip():
        raise LoadError(f"{name}: the file is empty")
    documents = [doc for doc in loader(data, name) if doc.text.strip()]
    if not documents:
        raise LoadError(f"{name}: no text could be extracted")
    return documents
