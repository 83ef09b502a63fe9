"""Files to `Document`s: one loader per format, chosen by extension, under input limits.

Every loader reads bytes it was given, so the API can parse uploads without touching the server's
file system. A file that cannot be parsed raises `LoadError` with the reason; the caller reports
it by name and goes on with the rest. Record formats (JSONL, JSON lists) report a bad record as a
`BadRecord` and keep the good ones.

`parse` applies `InputLimits` around every loader: compressed input is measured while it streams
(a decompression bomb is refused after reading at most the limit, never held in memory), then
records per file, characters per document and metadata nesting are checked as documents come out.
"""

from __future__ import annotations

import io
import json
import re
import unicodedata
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from indexes.errors import MissingDependency, not_utf8
from indexes.schema import EXTERNAL_ID_CHARS
from indexes.types import Document
from ingest import pdf, wordml
from ingest.limits import MIB, InputLimits, LoadError, mib

__all__ = ["MIB", "InputLimits", "LoadError", "mib", "parse", "load_bytes", "document_problem", "size_problem", "suffix_of", "unstorable_problem"]


@dataclass(frozen=True)
class BadRecord:
    """A record of a multi-record file that could not be used; the rest of the file still loads."""

    where: str  # "line 7", "record 3"
    reason: str


@dataclass
class Parsed:
    """A file's documents and the records that were skipped, as `where: reason` lines."""

    documents: list[Document]
    skipped: list[str] = field(default_factory=list)

    def problem(self, name: str, shown: int = 5) -> str | None:
        """One line for the run's error list, or None when nothing was skipped."""
        if not self.skipped:
            return None
        more = f"; and {len(self.skipped) - shown} more" if len(self.skipped) > shown else ""
        return f"{name}: skipped {len(self.skipped)} bad record(s), kept {len(self.documents)}: " + "; ".join(
            self.skipped[:shown]
        ) + more


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
            f"{name}: {not_utf8(exc)}"
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


def front_matter(text: str) -> tuple[dict[str, Any], str]:
    """A Markdown file's YAML front matter (`---` lines around it) as typed metadata, and the text
    after it. Dates become ISO strings (they compare as dates in filters), lists become lists of
    strings (tags), other values strings; a block that is not a YAML mapping is left as text."""
    match = re.match(r"---\n(.*?\n)---[ \t]*(\n|$)", text, flags=re.DOTALL)
    if not match:
        return {}, text
    import datetime as dt

    import yaml

    try:
        loaded = yaml.safe_load(match.group(1))
    except yaml.YAMLError:
        return {}, text
    if not isinstance(loaded, dict):
        return {}, text

    def typed(value: Any) -> Any:
        if isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, (dt.date, dt.datetime)):
            return value.isoformat()
        if isinstance(value, list):
            return [str(typed(v)) for v in value if v is not None]
        return None if value is None else str(value)

    metadata = {str(k): typed(v) for k, v in loaded.items() if typed(v) is not None}
    return metadata, text[match.end() :]


def load_text(data: bytes, name: str) -> Iterator[Document]:
    text = _clean(_decode(data, name))
    markdown = suffix_of(name) in (".md", ".markdown")
    metadata, text = front_matter(text) if markdown else ({}, text)
    title = _title_from_markdown(text) if markdown else ""
    given = metadata.get("title")
    title = given if isinstance(given, str) and given.strip() else title
    yield Document(source=name, text=text, title=title or Path(name).stem, metadata=metadata)


def load_html(data: bytes, name: str) -> Iterator[Document]:
    """The page's main content: headings, paragraphs, lists, tables and figure captions, wherever
    the page keeps them (divs and sections included), without navigation, footers or scripts.

    trafilatura (Apache-2.0) finds the main content; a page it finds none in (a bare fragment,
    say) keeps the whole body's text without scripts and styles."""
    try:
        import trafilatura
        from bs4 import BeautifulSoup
    except ImportError as exc:
        raise MissingDependency("HTML needs trafilatura, beautifulsoup4 and lxml: pip install 'rag[formats]'") from exc
    text = trafilatura.extract(
        data, include_tables=True, include_images=True, include_comments=False, favor_recall=True, deduplicate=False
    )
    soup = BeautifulSoup(data, "lxml")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    if not text or not text.strip():
        for tag in soup(["script", "style", "noscript", "template", "svg"]):
            tag.decompose()
        text = (soup.body or soup).get_text("\n", strip=True)
    yield Document(source=name, text=_clean(text), title=title or Path(name).stem)


def load_docx(data: bytes, name: str, limits: InputLimits = InputLimits()) -> Iterator[Document]:
    """Paragraphs and table rows in document order, read as a stream (`ingest.wordml`)."""
    for doc in wordml.load_docx(data, name, limits):
        yield Document(source=doc.source, text=_clean(doc.text), title=doc.title)


def _record_document(record: Any, name: str, where: str, ident_default: str) -> Document | BadRecord:
    """A generic `{"id","title","text","metadata"}` record or a BEIR `{"_id","title","text"}` one."""
    if not isinstance(record, dict):
        return BadRecord(where, f"expected a JSON object, not {type(record).__name__}")
    text = record.get("text")
    if not isinstance(text, str):
        return BadRecord(where, "missing a string field 'text'")
    ident = record.get("_id", record.get("id"))
    if isinstance(ident, (dict, list)):
        return BadRecord(where, "'id' must be a string or a number")
    ident = str(ident) if ident is not None else ident_default
    metadata = record.get("metadata") or {}
    if not isinstance(metadata, dict):
        return BadRecord(where, "'metadata' must be an object")
    title = record.get("title") or ""
    if not isinstance(title, (str, int, float)):
        return BadRecord(where, "'title' must be a string")
    return Document(
        source=f"{name}#{ident}",
        text=_clean(text),
        title=str(title),
        metadata=metadata,
        external_id=ident,
    )


def load_jsonl(data: bytes, name: str) -> Iterator[Document | BadRecord]:
    """One record per line. A line that is not a valid record is reported (`BadRecord`) and
    skipped; the other lines still load."""
    return jsonl_records(io.BytesIO(data), name)


def jsonl_records(lines: Iterable[bytes], name: str) -> Iterator[Document | BadRecord]:
    """`load_jsonl` over lines as they stream (a decompressing .jsonl.gz, say)."""
    for number, raw in enumerate(lines, start=1):
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        if not raw.strip():
            continue
        where = f"line {number}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield BadRecord(where, not_utf8(exc))
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            yield BadRecord(where, f"invalid JSON ({exc.msg})")
            continue
        except RecursionError:
            yield BadRecord(where, "JSON nested too deeply")
            continue
        yield _record_document(record, name, where, str(number))


def load_json(data: bytes, name: str) -> Iterator[Document | BadRecord]:
    """SQuAD JSON (each paragraph a document) or a JSON list of generic records."""
    try:
        payload = json.loads(_decode(data, name))
    except json.JSONDecodeError as exc:
        raise LoadError(f"{name}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise LoadError(f"{name}: JSON nested too deeply to parse") from None
    if isinstance(payload, dict) and isinstance(payload.get("data"), list):
        yield from squad_documents(payload, name)
    elif isinstance(payload, list):
        for number, record in enumerate(payload, start=1):
            yield _record_document(record, name, f"record {number}", str(number))
    else:
        raise LoadError(f"{name}: JSON must be SQuAD ({{'data': [...]}}) or a list of {{'id','title','text'}} records")


def squad_documents(payload: dict[str, Any], name: str) -> Iterator[Document]:
    """One document per SQuAD paragraph, id `ARTICLE-INDEX`, titled by its article.

    SQuAD files are all or nothing: a malformed article or paragraph refuses the file, naming
    the first bad element, because a half-read SQuAD file would silently skew an evaluation."""
    for a, article in enumerate(payload["data"]):
        if not isinstance(article, dict):
            raise LoadError(f"{name}: data[{a}] must be an object with 'title' and 'paragraphs', not {type(article).__name__}")
        raw_title = article.get("title", "")
        if not isinstance(raw_title, str):
            raise LoadError(f"{name}: data[{a}].title must be a string")
        paragraphs = article.get("paragraphs", [])
        if not isinstance(paragraphs, list):
            raise LoadError(f"{name}: data[{a}].paragraphs must be a list")
        for p, paragraph in enumerate(paragraphs):
            where = f"data[{a}].paragraphs[{p}]"
            if not isinstance(paragraph, dict):
                raise LoadError(f"{name}: {where} must be an object with a 'context', not {type(paragraph).__name__}")
            context = paragraph.get("context")
            if not isinstance(context, str):
                reason = "has no 'context'" if context is None else "'context' must be a string"
                raise LoadError(f"{name}: {where} {reason}")
            ident = f"{a:03d}-{p:03d}"
            yield Document(
                source=f"{name}#{ident}",
                text=context,
                title=raw_title.replace("_", " "),
                metadata={"article": raw_title, "paragraph": p},
                external_id=ident,
            )


LOADERS: dict[str, Callable[[bytes, str], Iterator[Document | BadRecord]]] = {
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


# Formats whose file holds exactly one document: its bytes' hash is the document's hash, so the
# pipeline skips an unchanged file without parsing it.
SINGLE_DOCUMENT = frozenset({".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".docx"})
_READ_CHUNK = 1 << 20
# A line that holds something other than white space: one match per record line of a JSONL file.
_TEXT_LINE = re.compile(rb"[^\s][^\n]*")


def _inflate(data: bytes, name: str, limits: InputLimits) -> Iterator[bytes]:
    """Gzip (all members) decompressed in 1 MiB steps; past the expanded limit it stops and refuses."""
    stream = zlib.decompressobj(wbits=31)
    rest = data
    total = 0
    try:
        while True:
            out = stream.decompress(rest, _READ_CHUNK)
            rest = stream.unconsumed_tail
            if out:
                total += len(out)
                if total > limits.max_expanded_bytes:
                    raise limits.expanded_error(name)
                yield out
            if stream.eof:  # a member ended: another may follow (concatenated gzip)
                rest = stream.unused_data.lstrip(b"\x00")
                if not rest:
                    return
                stream = zlib.decompressobj(wbits=31)
            elif not out and not rest:
                raise LoadError(f"{name}: not a valid gzip file (truncated)")
    except zlib.error as exc:
        raise LoadError(f"{name}: not a valid gzip file ({exc})") from None


def _gunzip(data: bytes, name: str, limits: InputLimits) -> bytes:
    """The whole decompressed file, for formats parsed whole (.json.gz). A first pass only counts,
    so a bomb costs CPU up to the limit and no memory; the second keeps bytes known to fit."""
    for _ in _inflate(data, name, limits):
        pass
    return b"".join(_inflate(data, name, limits))


def _lines(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """Lines (without their newline) of a byte stream, each held once however it was cut."""
    partial: list[bytes] = []
    for piece in pieces:
        parts = piece.split(b"\n")
        if len(parts) == 1:
            partial.append(piece)
            continue
        partial.append(parts[0])
        yield b"".join(partial)
        yield from parts[1:-1]
        partial = [parts[-1]]
    tail = b"".join(partial)
    if tail:
        yield tail


def _count_records(pieces: Iterable[bytes], name: str, limits: InputLimits) -> int:
    """Lines that hold a record, counted as the bytes stream past, without keeping any; refuses
    past the record limit. Runs before a JSONL file is parsed, so too many records cost no memory."""
    count = 0
    open_line_has_text = False  # the previous piece ended inside a line that holds a record
    for piece in pieces:
        found = sum(1 for _ in _TEXT_LINE.finditer(piece))
        newline = piece.find(b"\n")
        if open_line_has_text and (piece if newline < 0 else piece[:newline]).strip():
            found -= 1  # the same line, counted in the previous piece
        last = piece.rfind(b"\n")
        open_line_has_text = bool(piece[last + 1 :].strip()) or (last < 0 and open_line_has_text)
        count += found
        if count > limits.max_records:
            raise limits.records_error(name)
    return count


def _pieces(data: bytes) -> Iterator[bytes]:
    for start in range(0, len(data), _READ_CHUNK):
        yield data[start : start + _READ_CHUNK]


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of JSON-like data, counted without recursion and no deeper than limit + 1."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            if level > limit:
                return level
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def parse(data: bytes, name: str, limits: InputLimits = InputLimits()) -> Parsed:
    """One file's documents under `limits`; raises LoadError naming the file on any problem.

    A multi-record file keeps its good records and lists the bad ones (`Parsed.skipped`); it fails
    only when no record is good. Anything a parser raises becomes a LoadError: a malformed file
    is the file's problem, never the run's."""
    suffix = suffix_of(name)
    loader = LOADERS.get(suffix)
    if loader is None:
        raise LoadError(f"{name}: unsupported file type (supported: {', '.join(SUPPORTED)})")
    limits.check_size(len(data), name)
    if not data.strip():
        raise LoadError(f"{name}: the file is empty")
    items: Iterable[Document | BadRecord]
    if suffix == ".jsonl.gz":
        # Counted first as it streams (bytes and records), then parsed as it streams: the
        # decompressed file is never held whole.
        if not _count_records(_inflate(data, name, limits), name, limits):
            raise LoadError(f"{name}: the file is empty once decompressed")
        items = jsonl_records(_lines(_inflate(data, name, limits)), name)
    elif suffix == ".jsonl":
        _count_records(_pieces(data), name, limits)
        items = load_jsonl(data, name)
    elif suffix.endswith(".gz"):
        data = _gunzip(data, name, limits)
        if not data.strip():
            raise LoadError(f"{name}: the file is empty once decompressed")
        items = loader(data, name)
    elif suffix == ".docx":
        items = load_docx(data, name, limits)
    elif suffix == ".pdf" and pdf.inflated_bytes(data, limits.max_expanded_bytes) > limits.max_expanded_bytes:
        raise limits.expanded_error(name)
    else:
        items = loader(data, name)
    single = suffix in SINGLE_DOCUMENT
    parsed = Parsed(documents=[])
    try:
        for number, item in enumerate(items, start=1):
            if number > limits.max_records:
                raise limits.records_error(name)
            if isinstance(item, BadRecord):
                parsed.skipped.append(f"{item.where}: {item.reason}")
                continue
            problem = document_problem(item, limits)
            if problem and single:
                raise LoadError(f"{name}: {problem}")
            if problem:
                parsed.skipped.append(f"record {_label(item.external_id) or number}: {problem}")
            elif item.text.strip():
                parsed.documents.append(item)
    except (LoadError, MissingDependency):
        raise
    except RecursionError:
        raise LoadError(f"{name}: nested too deeply to parse") from None
    except Exception as exc:  # a parser's own failure on malformed input
        raise LoadError(f"{name}: could not be parsed ({type(exc).__name__}: {exc})") from None
    if not parsed.documents:
        if parsed.skipped:
            raise LoadError(
                f"{name}: no usable record; " + "; ".join(parsed.skipped[:5]) + ("; ..." if len(parsed.skipped) > 5 else "")
            )
        raise LoadError(f"{name}: no text could be extracted")
    return parsed


def _label(ident: str | None) -> str | None:
    """A record's id as a message shows it: at most 40 characters."""
    return ident if ident is None or len(ident) <= 40 else ident[:37] + "..."


def unstorable_problem(doc: Document) -> str | None:
    """Why `doc` cannot be stored whatever the limits (a NUL character, which PostgreSQL text cannot
    hold; an id longer than its column), or None: bad content, where `size_problem` is too much of it."""
    for part, value in (("text", doc.text), ("title", doc.title), ("id", doc.external_id or ""), ("source", doc.source)):
        if "\x00" in value:
            return f"holds a NUL character (U+0000) in its {part}, which cannot be stored"
    if doc.metadata and "\\u0000" in json.dumps(doc.metadata, default=str):
        return "holds a NUL character (U+0000) in its metadata, which cannot be stored"
    if doc.external_id is not None and len(doc.external_id) > EXTERNAL_ID_CHARS:
        return f"an id of {len(doc.external_id):,} characters, over the {EXTERNAL_ID_CHARS} a database column holds"
    return None


def size_problem(doc: Document, limits: InputLimits) -> str | None:
    """Why `doc` is over a per-document limit (characters, metadata nesting), or None."""
    if len(doc.text) > limits.max_document_chars:
        return f"{len(doc.text):,} characters, over the {limits.max_document_chars:,} limit (RAG_MAX_DOCUMENT_CHARS)"
    if _depth(doc.metadata, limits.max_json_depth) > limits.max_json_depth:
        return f"metadata nested deeper than {limits.max_json_depth} levels (RAG_MAX_JSON_DEPTH)"
    return None


def document_problem(doc: Document, limits: InputLimits) -> str | None:
    """Why `doc` cannot be ingested (either of the above), or None. Checked the same on every
    backend, so a file loads the same into SQLite and PostgreSQL."""
    return unstorable_problem(doc) or size_problem(doc, limits)


def load_bytes(data: bytes, name: str, limits: InputLimits = InputLimits()) -> list[Document]:
    """Parse one file's bytes, all or nothing: raises LoadError with the file name on any problem,
    a skipped record included. `parse` is the lenient form that keeps a file's good records."""
    parsed = parse(data, name, limits)
    problem = parsed.problem(name)
    if problem:
        raise LoadError(problem)
    return parsed.documents
