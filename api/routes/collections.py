"""Collections a key may see."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Request

from api.auth import check_collection, require
from api.keys import Principal
from api.schemas import CollectionList, CollectionOut, ErrorOut
from api.state import api_state

router = APIRouter(prefix="/v1/collections", tags=["collections"])
NamePath = Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="collection name")


@router.get("", response_model=CollectionList, summary="List the collections this key may see")
def list_collections(request: Request, principal: Principal = Depends(require("read"))) -> dict[str, Any]:
    store = api_state(request).runtime.store
    names = [n for n in store.collection_names() if principal.sees(n)]
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
