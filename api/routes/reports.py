"""Evaluation reports (`rag eval … --report`), served read-only from `RAG_HOME/reports`.

The pages are self-contained HTML; they show questions and passages of the collection they
evaluated, so a key sees a report only where it may read that collection (a key limited to another
collection gets the same 404 as for a missing report, and the listing leaves the report out); a
report that records no collection is shown to unrestricted keys only. The web page fetches them
with its key and opens a blob.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path as Path_
from typing import Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import FileResponse

from api.auth import require
from api.errors import ApiError
from api.keys import Principal
from api.schemas import ErrorOut
from api.state import api_state
from rag.evaluation.report import report_collection, reports_dir

router = APIRouter(prefix="/v1/reports", tags=["reports"])


def _visible(principal: Principal, page: Path_) -> bool:
    if principal.collection is None:
        return True
    owner = report_collection(page)
    return owner is not None and principal.sees(owner)


NamePath = Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\.html$", description="a report file name")


@router.get("", summary="The evaluation reports written under RAG_HOME/reports, newest first")
def list_reports(request: Request, principal: Principal = Depends(require("read"))) -> dict[str, Any]:
    folder = reports_dir(api_state(request).settings.home)
    found = sorted(folder.glob("*.html"), key=lambda p: p.stat().st_mtime, reverse=True) if folder.is_dir() else []
    found = [p for p in found if _visible(principal, p)]
    return {
        "reports": [
            {
                "name": p.name,
                "bytes": p.stat().st_size,
                "modified": datetime.fromtimestamp(p.stat().st_mtime, timezone.utc).isoformat(),
                "url": f"/v1/reports/{p.name}",
            }
            for p in found
        ]
    }


@router.get("/{name}", summary="One report page (text/html)", responses={404: {"model": ErrorOut}})
def get_report(request: Request, name: str = NamePath, principal: Principal = Depends(require("read"))) -> FileResponse:
    path = reports_dir(api_state(request).settings.home) / name
    if not path.is_file() or not _visible(principal, path):
        raise ApiError(404, "not_found", f"no report named {name!r} (rag eval … --report writes them)")
    return FileResponse(path, media_type="text/html", headers={"Cache-Control": "no-cache"})
