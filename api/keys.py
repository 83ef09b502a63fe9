"""API keys: created once and shown once, stored as SHA-256 hashes, scoped read|write and
optionally to one collection.

A key is 256 bits from `secrets.token_urlsafe`; at that entropy a plain SHA-256 is the right hash
(a slow password hash buys nothing), and it lets a key be found by its hash in one indexed lookup.
The found hash is still compared with `hmac.compare_digest`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from api.tables import ApiKeyRow, create_tables
from indexes.errors import InvalidInput, RagError
from indexes.filters import Where, parse_where
from indexes.schema import utcnow
from indexes.store import Store

Scope = Literal["read", "write"]
SCOPES: tuple[str, ...] = ("read", "write")
KEY_PREFIX = "rag_"


class KeyNotFound(RagError):
    code = "key_not_found"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key's name, scope and optional collection (or the anonymous developer)."""

    key_id: int | None
    name: str
    scope: str
    collection: str | None = None
    where: dict[str, Any] | None = None  # a mandatory filter ANDed into everything the key reads

    def where_filter(self) -> Where | None:
        return parse_where(self.where, "key filter") if self.where else None

    def can(self, scope: str) -> bool:
        return scope == "read" or self.scope == "write"

    def sees(self, collection: str) -> bool:
        return self.collection is None or self.collection == collection


ANONYMOUS = Principal(key_id=None, name="anonymous (auth disabled)", scope="write")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class KeyStore:
    def __init__(self, store: Store) -> None:
        create_tables(store.engine)
        self.store = store
        self.sessions: sessionmaker[Any] = store.sessions

    def create(
        self, name: str, scope: str, collection: str | None = None, where: dict[str, Any] | str | None = None
    ) -> tuple[str, dict[str, Any]]:
        """Returns (the key, its record). The key is not stored and cannot be shown again.
        `where` is a mandatory filter (e.g. {"tenant": "acme"}) on all the key reads."""
        mandatory = parse_where(where, "key filter").to_dict() if where else None
        name = name.strip()
        if not name or len(name) > 200:
            raise InvalidInput("a key needs a name of 1-200 characters")
        if scope not in SCOPES:
            raise InvalidInput(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        row = ApiKeyRow(
            name=name, key_hash=hash_key(key), prefix=key[:10], scope=scope, collection=collection, where_filter=mandatory
        )
        try:
            with self.sessions.begin() as session:
                session.add(row)
                session.flush()
                record = _record(row)
        except IntegrityError:
            raise InvalidInput(f"a key named {name!r} already exists; revoke it or choose another name") from None
        return key, record

    def list(self, include_revoked: bool = False) -> list[dict[str, Any]]:
        with self.sessions() as session:
            stmt = select(ApiKeyRow).order_by(ApiKeyRow.id)
            if not include_revoked:
                stmt = stmt.where(ApiKeyRow.revoked_at.is_(None))
            return [_record(row) for row in session.scalars(stmt)]

    def revoke(self, ref: str) -> dict[str, Any]:
        """Revoke by name, id or the key's shown prefix."""
        with self.sessions.begin() as session:
            stmt = select(ApiKeyRow).where(ApiKeyRow.revoked_at.is_(None))
            rows = list(session.scalars(stmt.where(ApiKeyRow.name == ref)))
            if not rows and ref.isdigit():
                rows = list(session.scalars(stmt.where(ApiKeyRow.id == int(ref))))
            if not rows and ref.startswith(KEY_PREFIX):
                rows = list(session.scalars(stmt.where(ApiKeyRow.prefix == ref[:10])))
            if len(rows) != 1:
                raise KeyNotFound(f"no single active key matches {ref!r} (rag keys list shows them)")
            rows[0].revoked_at = utcnow()
            return _record(rows[0])

    def verify(self, key: str) -> Principal | None:
        """The principal for a presented key, or None for an unknown or revoked one."""
        if not key.startswith(KEY_PREFIX) or len(key) > 200:
            return None
        digest = hash_key(key)
        with self.sessions() as session:
            row = session.scalars(select(ApiKeyRow).where(ApiKeyRow.key_hash == digest)).first()
        if row is None or row.revoked_at is not None or not hmac.compare_digest(row.key_hash, digest):
            return None
        return Principal(key_id=row.id, name=row.name, scope=row.scope, collection=row.collection, where=row.where_filter or None)

    def touch(self, key_id: int) -> None:
        with self.sessions.begin() as session:
            session.execute(update(ApiKeyRow).where(ApiKeyRow.id == key_id).values(last_used_at=utcnow()))


def _record(row: ApiKeyRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "prefix": row.prefix,
        "scope": row.scope,
        "collection": row.collection,
        "where": row.where_filter,
        "created_at": row.created_at.isoformat() if row.created_at else None,
        "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
    }
