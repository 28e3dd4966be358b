"""Paging through the audit log, newest first."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from mlops_common.auth import Reader
from registry_proxy import audit
from registry_proxy.context import Ctx

router = APIRouter(tags=["audit"])


@router.get("/audit")
def list_audit(ctx: Ctx, _: Reader, model: str | None = None, action: str | None = None,
               limit: Annotated[int, Query(ge=1, le=500)] = 50,
               offset: Annotated[int, Query(ge=0)] = 0,
               before_id: Annotated[int | None, Query(ge=1, description="cursor: the last id of the previous page")]
               = None) -> dict[str, Any]:
    with ctx.sessions() as session:
        rows, total = audit.page(session, model=model, action=action, limit=limit, offset=offset,
                                 before_id=before_id)
        items = [audit.to_dict(r) for r in rows]
    next_offset = offset + len(items) if before_id is None and offset + len(items) < total else None
    return {"items": items, "total": total, "limit": limit, "offset": offset, "next_offset": next_offset,
            "next_before_id": items[-1]["id"] if len(items) == limit else None}
