"""A request's filter and its key's mandatory filter, as one `Where` for the indexes.

Every search, answer, chat turn and document listing a key makes goes through `scoped`: the key's
filter (a tenant, say) is ANDed with whatever the request asks, so `$or`, `$not` or another
tenant's values in the request can only narrow what the key sees, never widen it.
"""

from __future__ import annotations

from typing import Any

from api.keys import Principal
from api.schemas import Filters
from indexes.filters import Where, parse_where


def request_where(filters: Filters | None) -> Where | None:
    """`filters` of a request: `where` (the filter language), plus the older shorthand fields
    (`source_prefix`, `doc_ids`, `metadata` equality), all of which must hold."""
    if filters is None:
        return None
    parts: list[dict[str, Any]] = []
    if filters.where:
        parts.append(dict(filters.where))
    if filters.source_prefix is not None:
        parts.append({"source": {"$prefix": filters.source_prefix}})
    if filters.doc_ids is not None:
        parts.append({"doc_id": {"$in": list(filters.doc_ids)}})
    if filters.metadata:
        # metadata keys, even one named like a built-in field (`source`, `doc_id`)
        parts.append({f"metadata.{key}": value for key, value in filters.metadata.items()})
    if not parts:
        return None
    where = parse_where(parts[0], "filters.where" if filters.where else "filters")
    for part in parts[1:]:
        where = where.and_(parse_where(part, "filters"))
    return where if where else None


def scoped(principal: Principal, where: Where | None) -> Where | None:
    """The key's mandatory filter ANDed with the request's (either may be absent)."""
    mandatory = principal.where_filter()
    if mandatory is None:
        return where
    return mandatory.and_(where)
