"""Collections a key may see, and deleting one whole."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Request
from starlette.concurrency import run_in_threadpool

from api.auth import check_collection, require
from api.keys import Principal
from api.schemas import CollectionList, CollectionOut, ErrorOut
from api.state import api_state

router = APIRouter(prefix="/v1/collections", tags=["collections"])
NamePath = Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="collection name")


@router.get("", response_model=CollectionList, summary="List the collections this key may see")
def list_collections(request: Request, principal: Principal = Depends(require("read"))) -> dict[str, Any]:
    store = api_state(request).runtime.store
    names = [n for n in store.collection_names() if principal.sees(n)]  # unusable ones are skipped
    return {"collections": [store.collection(n).stats() for n in names]}


@router.get(
    "/{name}",
    response_model=CollectionOut,
    summary="One collection's counts and configuration",
    responses={404: {"model": ErrorOut}, 403: {"model": ErrorOut}},
)
def get_collection(request: Request, name: str = NamePath, principal: Principal = Depends(require("read"))) -> dict[str, Any]:
    check_collection(principal, name)
    return api_state(request).runtime.store.collection(name).stats()


@router.delete(
    "/{name}",
    summary="Delete a collection whole: documents, chunks, runs and index files",
    responses={404: {"model": ErrorOut}, 403: {"model": ErrorOut}},
)
async def delete_collection(
    request: Request, name: str = NamePath, principal: Principal = Depends(require("write"))
) -> dict[str, Any]:
    check_collection(principal, name)
    await run_in_threadpool(api_state(request).runtime.store.drop_collection, name)
    return {"collection": name, "deleted": True}
