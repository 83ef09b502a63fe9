"""One filter language for every surface: Chroma/Mongo-style `where` dicts, checked, compiled to SQL.

A filter is parsed once into a small AST (`Cond`, `And`, `Or`, `Not`); every mistake is refused
here with the path inside the filter that caused it (`where.$or[1].year.$gte`), never left to fail
in SQL as a 500 or to match nothing in silence. The AST compiles to one SQLAlchemy condition on
the documents table: built-in fields are its columns, metadata fields index range scans of the
key/value table `document_fields` (one row per value, indexed on (key, number) and (key,
string): measured against JSON columns in docs/filters.md). It resolves to the set of matching
chunk ids of a snapshot, and the indexes search only that set (indexes/filtered.py).

Fields: metadata keys by name (`year`, `tenant`, `tags`), or `metadata.NAME` for a key that shares
a name with a built-in; built-ins `source` (the stored source or the label the API shows),
`doc_id`, `external_id`, `ingested_at`.
Operators: `$eq $ne $gt $gte $lt $lte $in $nin $exists $contains $prefix`, `$and $or $not`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from indexes.errors import InvalidInput

MAX_DEPTH = 8
MAX_CONDITIONS = 256
MAX_LIST = 1000
MAX_STRING = 500  # the longest metadata string that is filterable (indexes/metadata.py MAX_INDEXED)
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")

COMPARE = ("$gt", "$gte", "$lt", "$lte")
FIELD_OPS = ("$eq", "$ne", *COMPARE, "$in", "$nin", "$exists", "$contains", "$prefix")
LOGIC_OPS = ("$and", "$or", "$not")
# Built-in fields and their types: what each may be compared with.
BUILTINS: dict[str, str] = {"source": "string", "doc_id": "integer", "external_id": "string", "ingested_at": "datetime"}

Scalar = str | int | float | bool


class FilterError(InvalidInput):
    """A filter that cannot be used as given; the message names the path inside the filter."""

    code = "invalid_filter"


@dataclass(frozen=True)
class Cond:
    """One comparison: `field` (a metadata key, or a built-in when `builtin`) `op` `value`."""

    field: str
    builtin: bool
    op: str
    value: Any


@dataclass(frozen=True)
class And:
    parts: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    parts: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    part: Node


Node = Cond | And | Or | Not


@dataclass(frozen=True)
class Where:
    """A parsed filter (`root` None matches everything) and the dict it came from."""

    root: Node | None
    source: Mapping[str, Any]

    def __bool__(self) -> bool:
        return self.root is not None

    def and_(self, other: Where | None) -> Where:
        """Both must hold: how a key's mandatory filter joins a request's own."""
        if other is None or other.root is None:
            return self
        if self.root is None:
            return other
        return Where(And((self.root, other.root)), {"$and": [dict(self.source), dict(other.source)]})

    def to_dict(self) -> dict[str, Any]:
        return dict(self.source)


def parse_where(data: Any, path: str = "where") -> Where:
    """Check and parse a `where` dict (or its JSON text); raises `FilterError` naming the path."""
    if isinstance(data, Where):
        return data
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise FilterError(f"{path}: not valid JSON ({exc.msg} at character {exc.pos})") from None
    if data is None:
        return Where(None, {})
    if not isinstance(data, Mapping):
        raise FilterError(f"{path}: a filter is an object such as {{\"year\": {{\"$gte\": 2020}}}}, not {_kind(data)}")
    counter = [0]
    root = _document(data, path, 1, counter)
    return Where(root, dict(data))


def parse_short(items: list[str]) -> Where:
    """`key=value` pairs (the CLI's short form): equality, values typed as JSON where they parse
    (`year=2020` is a number, `draft=true` a boolean), else strings (`tenant=acme`)."""
    from indexes.metadata import typed_pair

    where: dict[str, Any] = {}
    for item in items:
        pair = typed_pair(item, lists=False)
        if pair is None:
            raise FilterError(f"--where {item!r}: use key=value or a JSON object")
        where[pair[0]] = pair[1]
    return parse_where(where)


def parse_cli(values: list[str] | None) -> Where | None:
    """`--where` values: one JSON object, or any number of key=value pairs."""
    if not values:
        return None
    if len(values) == 1 and values[0].lstrip().startswith("{"):
        return parse_where(values[0])
    return parse_short(values)


# -- parsing -------------------------------------------------------------------------------------
def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    if value is None:
        return "null"
    return type(value).__name__


def _count(counter: list[int], path: str) -> None:
    counter[0] += 1
    if counter[0] > MAX_CONDITIONS:
        raise FilterError(f"{path}: the filter has more than {MAX_CONDITIONS} conditions")


def _document(data: Mapping[str, Any], path: str, depth: int, counter: list[int]) -> Node | None:
    """An object whose keys are fields or logical operators, all of which must hold."""
    if depth > MAX_DEPTH:
        raise FilterError(f"{path}: the filter nests deeper than {MAX_DEPTH} levels")
    if "operator" in data and ("conditions" in data or "field" in data):
        raise FilterError(
            f"{path}: this looks like a Haystack filter ({{\"operator\": ..., \"conditions\": ...}}); "
            "rag takes Chroma/Mongo-style filters: {\"field\": value} or {\"field\": {\"$gte\": 2020}}, "
            "combined with $and, $or, $not"
        )
    parts: list[Node] = []
    for key, value in data.items():
        if not isinstance(key, str):
            raise FilterError(f"{path}: keys are strings, not {_kind(key)}")
        here = f"{path}.{key}"
        if key.startswith("$"):
            if key in ("$and", "$or"):
                if not isinstance(value, list) or not value:
                    raise FilterError(f"{here}: takes a non-empty list of filters, not {_kind(value)}")
                subs: list[Node] = []
                for i, item in enumerate(value):
                    if not isinstance(item, Mapping):
                        raise FilterError(f"{here}[{i}]: each item is a filter object, not {_kind(item)}")
                    node = _document(item, f"{here}[{i}]", depth + 1, counter)
                    if node is None:
                        raise FilterError(f"{here}[{i}]: an empty filter here is ambiguous; leave it out")
                    subs.append(node)
                parts.append(And(tuple(subs)) if key == "$and" else Or(tuple(subs)))
            elif key == "$not":
                if not isinstance(value, Mapping) or not value:
                    raise FilterError(f"{here}: takes one non-empty filter object, not {_kind(value)}")
                node = _document(value, here, depth + 1, counter)
                assert node is not None
                parts.append(Not(node))
            elif key in FIELD_OPS:
                raise FilterError(f"{here}: {key} compares a field; write {{\"FIELD\": {{\"{key}\": ...}}}}")
            else:
                raise FilterError(f"{here}: unknown operator {key!r}; logical operators are {', '.join(LOGIC_OPS)}")
            continue
        parts.extend(_field(key, value, here, depth + 1, counter))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else And(tuple(parts))


def _resolve_field(name: str, path: str) -> tuple[str, bool]:
    if name.startswith("metadata."):
        bare = name[len("metadata.") :]
        builtin = False
    else:
        bare = name
        builtin = name in BUILTINS
    if not _FIELD.match(bare):
        raise FilterError(
            f"{path}: field name {name!r} is not usable; names are 1-64 letters, digits, '_' or '-', "
            "starting with a letter or '_'"
        )
    return bare, builtin


def _field(name: str, value: Any, path: str, depth: int, counter: list[int]) -> list[Node]:
    field, builtin = _resolve_field(name, path)
    if depth > MAX_DEPTH:
        raise FilterError(f"{path}: the filter nests deeper than {MAX_DEPTH} levels")
    if isinstance(value, Mapping):
        if not value:
            raise FilterError(f"{path}: an empty condition; give a value or an operator such as $eq")
        conds: list[Node] = []
        for op, operand in value.items():
            here = f"{path}.{op}"
            if not isinstance(op, str) or not op.startswith("$"):
                raise FilterError(
                    f"{here}: expected an operator ({', '.join(FIELD_OPS)}); nested objects are not fields"
                )
            if op == "$not":
                if not isinstance(operand, Mapping) or not operand:
                    raise FilterError(f"{here}: takes an operator object such as {{\"$gt\": 5}}, not {_kind(operand)}")
                inner = _field(name, operand, here, depth + 1, counter)
                conds.append(Not(inner[0] if len(inner) == 1 else And(tuple(inner))))
                continue
            if op not in FIELD_OPS:
                raise FilterError(f"{here}: unknown operator {op!r}; use one of {', '.join(FIELD_OPS)}")
            _count(counter, here)
            conds.append(Cond(field, builtin, op, _operand(field, builtin, op, operand, here)))
        return conds
    _count(counter, path)
    if isinstance(value, list):
        raise FilterError(f"{path}: a list where a single value belongs; write {{\"$in\": [...]}} to match any of them")
    return [Cond(field, builtin, "$eq", _operand(field, builtin, "$eq", value, path))]


def _scalar(value: Any, path: str) -> Scalar:
    if isinstance(value, bool) or isinstance(value, str):
        if isinstance(value, str) and len(value) > MAX_STRING:
            raise FilterError(f"{path}: strings in a filter are at most {MAX_STRING} characters")
        return value
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise FilterError(f"{path}: {value} is not a finite number")
        if isinstance(value, int) and abs(value) > 2**1000:
            raise FilterError(f"{path}: the number is too large to compare")
        return value
    if isinstance(value, list):
        raise FilterError(f"{path}: a list where a single value belongs")
    if value is None:
        raise FilterError(f"{path}: null cannot be compared; use {{\"$exists\": false}} for a missing field")
    raise FilterError(f"{path}: expected a string, number or boolean, not {_kind(value)}")


def parse_datetime(value: str) -> datetime | None:
    """An ISO 8601 date or date-time (naive ones are UTC), else None."""
    if len(value) < 10 or not value[:4].isdigit():
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=timezone.utc)
    try:
        return parsed.astimezone(timezone.utc)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before the first datetime in UTC
        return (datetime.min if parsed.year == 1 else datetime.max).replace(tzinfo=timezone.utc)


def _operand(field: str, builtin: bool, op: str, value: Any, path: str) -> Any:
    kind = BUILTINS[field] if builtin else "any"
    if op == "$exists":
        if not isinstance(value, bool):
            raise FilterError(f"{path}: $exists takes true or false, not {_kind(value)}")
        if builtin and field != "external_id":
            raise FilterError(f"{path}: every document has a {field}; $exists applies to metadata and external_id")
        return value
    if op in ("$in", "$nin"):
        if not isinstance(value, list):
            raise FilterError(f"{path}: {op} takes a list of values, not {_kind(value)}")
        if len(value) > MAX_LIST:
            raise FilterError(f"{path}: {op} takes at most {MAX_LIST} values")
        return tuple(_typed(field, kind, "$eq", _scalar(v, f"{path}[{i}]"), f"{path}[{i}]") for i, v in enumerate(value))
    scalar = _scalar(value, path)
    return _typed(field, kind, op, scalar, path)


def _typed(field: str, kind: str, op: str, value: Scalar, path: str) -> Any:
    """Checks `value` against the field's type and the operator; returns what SQL compares."""
    if op == "$prefix":
        if not isinstance(value, str):
            raise FilterError(f"{path}: $prefix takes a string, not {_kind(value)}")
        if kind not in ("any", "string"):
            raise FilterError(f"{path}: $prefix applies to string fields; {field} is a {kind}")
        return value
    if op == "$contains":
        if kind != "any":
            raise FilterError(f"{path}: $contains applies to metadata lists (tags); use $eq or $prefix on {field}")
        return value
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            raise FilterError(f"{path}: {field} is an integer, not {_kind(value)}")
        if not -(2**63) <= value < 2**63:
            raise FilterError(f"{path}: {field} is a 64-bit integer; {value} is out of range")
        return value
    if kind == "string":
        if op in COMPARE:
            raise FilterError(f"{path}: {op} is a range; {field} is a string (use $eq, $in or $prefix)")
        if not isinstance(value, str):
            raise FilterError(f"{path}: {field} is a string, not {_kind(value)}")
        return value
    if kind == "datetime":
        moment = parse_datetime(value) if isinstance(value, str) else None
        if moment is None:
            raise FilterError(f"{path}: {field} is compared with an ISO date such as \"2024-01-31\", not {value!r}")
        return moment
    # A metadata field: ranges compare numbers, or ISO dates written as strings.
    if op in COMPARE:
        if isinstance(value, bool):
            raise FilterError(f"{path}: {op} is a range; a boolean has none")
        if isinstance(value, str) and parse_datetime(value) is None:
            raise FilterError(
                f"{path}: {op} is a range on a string; ranges compare numbers or ISO dates (\"2024-01-31\")"
            )
    return value


# -- SQL -----------------------------------------------------------------------------------------
def to_sql(where: Where | Node | None, dialect: str) -> Any:
    """The SQLAlchemy condition on `DocumentRow` for a parsed filter (None: no condition):
    built-in fields are its columns, metadata fields subqueries of the key/value table
    (`DocumentFieldRow`)."""
    node = where.root if isinstance(where, Where) else where
    if node is None:
        return None
    return _Compiler(dialect).node(node)


def positive(c: Cond) -> tuple[Cond, bool]:
    """(a condition, negated): `$ne`, `$nin` and a metadata `$exists: false` as the negation of
    the condition that selects rows (`$eq`, `$in`, `$exists: true`), as Mongo defines them: a
    document without the field matches the negation."""
    if c.op == "$ne":
        return Cond(c.field, c.builtin, "$eq", c.value), True
    if c.op == "$nin":
        return Cond(c.field, c.builtin, "$in", c.value), True
    if c.op == "$exists" and not c.value and not c.builtin:
        return Cond(c.field, c.builtin, "$exists", True), True
    return c, False


def document_ids(c: Cond, collection_id: int, dialect: str) -> Any:
    """SELECT of the ids of the documents a condition without negation holds for (`positive`):
    for a metadata field the `document_id`s of its key/value rows (an index-only range scan of
    every collection's rows of that key; the caller keeps its own), for a built-in the
    collection's documents rows."""
    from sqlalchemy import select

    from indexes.schema import DocumentRow

    compiler = _Compiler(dialect)
    if c.builtin:
        return select(DocumentRow.id).where(DocumentRow.collection_id == collection_id, compiler.builtin(c))
    return compiler.field_rows(c)


class _Compiler:
    def __init__(self, dialect: str) -> None:
        if dialect not in ("sqlite", "postgresql"):
            raise FilterError(f"filters are compiled for SQLite and PostgreSQL, not {dialect}")
        self.dialect = dialect

    def node(self, node: Node) -> Any:
        from sqlalchemy import and_, false, func, not_, or_

        if isinstance(node, And):
            return and_(*[self.node(p) for p in node.parts])
        if isinstance(node, Or):
            return or_(*[func.coalesce(self.node(p), false()) for p in node.parts])
        if isinstance(node, Not):
            # SQL's NULL (a missing field) must not make NOT unknown: Mongo's $not matches it.
            return not_(func.coalesce(self.node(node.part), false()))
        return self.cond(node)

    def cond(self, c: Cond) -> Any:
        from sqlalchemy import false, func, not_

        base, negated = positive(c)
        found = self.builtin(base) if base.builtin else self.fields(base)
        return not_(func.coalesce(found, false())) if negated else found

    def builtin(self, c: Cond) -> Any:
        from sqlalchemy import or_

        from indexes.schema import DocumentRow

        column: Any = {
            "source": DocumentRow.source,
            "doc_id": DocumentRow.id,
            "external_id": DocumentRow.external_id,
            "ingested_at": DocumentRow.created_at,
        }[c.field]
        value = c.value
        if c.field == "ingested_at" and self.dialect == "sqlite":
            value = value.replace(tzinfo=None) if isinstance(value, datetime) else value
        if c.op == "$eq":
            found = column == value
        elif c.op == "$in":
            # one IN, not an OR per value: SQLite refuses an expression tree deeper than 1000
            found = column.in_(list(dict.fromkeys(c.value)))
        elif c.op == "$exists":
            return column.isnot(None) if c.value else column.is_(None)
        elif c.op == "$prefix":
            found = column.startswith(value, autoescape=True)
        else:
            return _compare(column, c.op, value)
        if c.field == "source":
            # A source is shown (API, web page) as its label: either one matches.
            from sqlalchemy import false, func

            from indexes.metadata import LABEL_KEY

            return or_(func.coalesce(found, false()), self.fields(Cond(LABEL_KEY, False, c.op, c.value)))
        return found

    def fields(self, c: Cond) -> Any:
        """A metadata condition: the documents with a matching row in the key/value table (an
        index range scan on (key, number) or (key, string)); a list field matches when any of
        its elements does, as in Mongo."""
        from indexes.schema import DocumentRow

        return DocumentRow.id.in_(self.field_rows(c))

    def field_rows(self, c: Cond) -> Any:
        """SELECT document_id of the key/value rows that satisfy `c` (`$exists` either way: the
        rows of the key)."""
        from sqlalchemy import select

        from indexes.schema import DocumentFieldRow as F

        def value_is(v: Any) -> Any:
            if isinstance(v, bool):
                return (F.kind == "b") & (F.number == float(v))
            if isinstance(v, (int, float)):
                return (F.kind == "n") & (F.number == float(v))
            return (F.kind == "s") & (F.string == v)

        string = F.string.collate("C") if self.dialect == "postgresql" else F.string
        if c.op == "$exists":
            found = None
        elif c.op in ("$eq", "$contains"):
            found = value_is(c.value)
        elif c.op == "$in":
            found = self.any_of(c.value)
        elif c.op == "$prefix":
            found = (F.kind == "s") & string.startswith(c.value, autoescape=True)
        elif isinstance(c.value, str):  # an ISO date: ISO strings sort as the dates they name
            found = (F.kind == "s") & _compare(string, c.op, c.value)
        else:
            found = (F.kind == "n") & _compare(F.number, c.op, float(c.value))
        rows = select(F.document_id).where(F.key == c.field)
        return rows if found is None else rows.where(found)

    @staticmethod
    def any_of(values: tuple[Any, ...]) -> Any:
        """A row equal to any of `values`: one IN per value type (at most three terms), not an OR
        per value, which SQLite refuses past 1000 values ("Expression tree is too large")."""
        from sqlalchemy import false, or_

        from indexes.schema import DocumentFieldRow as F

        booleans = sorted({float(v) for v in values if isinstance(v, bool)})
        numbers = sorted({float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)})
        strings = sorted({v for v in values if isinstance(v, str)})
        terms = []
        if booleans:
            terms.append((F.kind == "b") & F.number.in_(booleans))
        if numbers:
            terms.append((F.kind == "n") & F.number.in_(numbers))
        if strings:
            terms.append((F.kind == "s") & F.string.in_(strings))
        return or_(*terms) if terms else false()


def _compare(column: Any, op: str, value: Any) -> Any:
    if op == "$gt":
        return column > value
    if op == "$gte":
        return column >= value
    if op == "$lt":
        return column < value
    if op == "$lte":
        return column <= value
    raise FilterError(f"operator {op} does not compare")
