"""Request-size limits and upload-name hygiene.

The body limit is enforced while the body streams in (Content-Length is checked first, then the
bytes actually received), so a lying or chunked client cannot push more than the limit.
"""

from __future__ import annotations

import re
import unicodedata

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_bytes
from ingest.loaders import mib

_UNSAFE = re.compile(r"[^\w.\- ]+", re.UNICODE)


def safe_upload_name(raw: str | None) -> str:
    """A bare file name from whatever a client sent: no folders, no '..', no control characters.

    `../../etc/passwd` becomes `passwd`, `C:\\x\\y.txt` becomes `y.txt`. Upload names are labels
    (documents are parsed from bytes and never written to disk), but a label that looks like a path
    must not be mistaken for one later.
    """
    name = unicodedata.normalize("NFC", raw or "")
    name = name.replace("\\", "/").split("/")[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = _UNSAFE.sub("_", name).strip(" .")
    name = name.lstrip("-")
    if len(name) > 120:
        stem, dot, ext = name.rpartition(".")
        name = (stem[: 110] + dot + ext[:9]) if dot else name[:120]
    return name or "upload"


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_bytes
            except ValueError:
                too_big = False
            if too_big:
                await self._reject(send)
                return
        received = 0

        async def receiving() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # An HTTPException passes through FastAPI's body parsing untouched and is
                    # rendered by the one error handler.
                    raise HTTPException(413, detail=self.message())
            return message

        await self.app(scope, receiving, send)

    def message(self) -> str:
        return f"the request body is over the {mib(self.max_bytes)} MiB limit (RAG_MAX_BODY_MB)"

    async def _reject(self, send: Send) -> None:
        body = error_bytes("payload_too_large", self.message())
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
