"""Paging through the audit log, newest first."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from mlops_common.auth import Reader
from registry_proxy import audit
from registry_proxy.deps import Ctx
from registry_proxy.schemas import AuditPage

router = APIRouter(tags=["audit"])


@router.get("/audit", response_model=AuditPage)
def list_audit(_: Reader, ctx: Ctx, model: str | None = None, action: str | None = None,
               limit: Annotated[int, Query(ge=1, le=500)] = 50,
               offset: Annotated[int, Query(ge=0)] = 0,
               before_id: Annotated[int | None, Query(ge=1, description="cursor: the last id of the previous page")]
               = None) -> dict[str, Any]:
    return audit.listing(ctx.sessions, model=model, action=action, limit=limit, offset=offset, before_id=before_id)
