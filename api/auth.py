"""Bearer API keys and a per-key rate limit, as FastAPI dependencies.

No or unknown key: 401. Known key lacking the scope or the collection: 403. Over the rate: 429 with
Retry-After. All checks run before the endpoint does anything.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.errors import ApiError
from api.keys import ANONYMOUS, Principal

_bearer = HTTPBearer(auto_error=False, description="an API key from `rag keys create`")


class RateLimiter:
    """A token bucket per caller, in process: `per_minute` tokens refilled evenly, burst the same."""

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, who: str) -> float:
        """0.0 when allowed, else the seconds until a token is available."""
        if self.capacity <= 0:
            return 0.0
        now = time.monotonic()
        with self._lock:
            tokens, stamp = self._buckets.get(who, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - stamp) * self.rate)
            if tokens >= 1.0:
                self._buckets[who] = (tokens - 1.0, now)
                return 0.0
            self._buckets[who] = (tokens, now)
            return (1.0 - tokens) / self.rate


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, {"WWW-Authenticate": 'Bearer realm="rag"'})


def authenticate(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> Principal:
    state = request.app.state.api
    if not state.settings.auth:
        principal = ANONYMOUS
        caller = "ip:" + (request.client.host if request.client else "?")
    else:
        if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
            raise _unauthorized("an API key is required: send 'Authorization: Bearer KEY' (rag keys create)")
        found = state.keys.verify(credentials.credentials)
        if found is None:
            raise _unauthorized("the API key is not valid or has been revoked")
        principal = found
        caller = f"key:{found.key_id}"
    wait = state.limiter.take(caller)
    if wait > 0:
        raise ApiError(
            429,
            "rate_limited",
            f"rate limit of {state.settings.rate_limit_per_minute} requests per minute reached; retry in {math.ceil(wait)} s",
            {"Retry-After": str(max(1, math.ceil(wait)))},
        )
    request.state.principal = principal
    return principal


def optional_principal(request: Request) -> Principal | None:
    """Who is calling, for an endpoint that needs no key but says more to a valid one: None for no
    key or an unknown one (never a 401), the anonymous developer when auth is off."""
    state = request.app.state.api
    if not state.settings.auth:
        return ANONYMOUS
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return None
    found: Principal | None = state.keys.verify(key.strip())
    return found


def require(scope: str) -> Callable[..., Principal]:
    """A dependency that authenticates and demands `scope` ('read' or 'write')."""

    def dependency(principal: Principal = Depends(authenticate)) -> Principal:
        if not principal.can(scope):
            raise ApiError(403, "forbidden", f"this key has the '{principal.scope}' scope; '{scope}' is needed")
        return principal

    return dependency


def check_collection(principal: Principal, collection: str) -> None:
    if not principal.sees(collection):
        raise ApiError(403, "forbidden", f"this key is limited to collection {principal.collection!r}")
