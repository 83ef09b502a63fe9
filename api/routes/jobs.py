"""Ingestion job status."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Request

from api.auth import require
from api.errors import ApiError
from api.keys import Principal
from api.schemas import ErrorOut, JobOut
from api.state import api_state

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.get(
    "/{job_id}",
    response_model=JobOut,
    summary="Progress, counts and per-file errors of an ingestion job",
    responses={404: {"model": ErrorOut}},
)
def get_job(
    request: Request,
    job_id: str = Path(pattern=r"^[0-9a-f]{32}$"),
    principal: Principal = Depends(require("read")),
) -> dict[str, Any]:
    job = api_state(request).jobs.get(job_id)
    # A job of a collection the key cannot see does not exist for it.
    if job is None or not principal.sees(job["collection"]):
        raise ApiError(404, "job_not_found", f"no job {job_id}")
    return job
