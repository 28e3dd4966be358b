"""What was sent to the webhook, and how it went."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from sqlalchemy import select

from mlops_common.auth import Reader
from registry_proxy.context import Ctx
from registry_proxy.db import Notification

router = APIRouter(tags=["notifications"])


@router.get("/notifications")
def list_notifications(ctx: Ctx, _: Reader, model: str | None = None,
                       status: Literal["pending", "sent", "failed"] | None = None,
                       limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[dict[str, Any]]:
    query = select(Notification).order_by(Notification.id.desc()).limit(limit)
    if model:
        query = query.where(Notification.model_name == model)
    if status:
        query = query.where(Notification.status == status)
    with ctx.sessions() as session:
        rows = session.scalars(query).all()
        return [
            {"id": n.id, "event": n.event, "model_name": n.model_name, "status": n.status, "attempts": n.attempts,
             "last_error": n.last_error, "created_at": n.created_at.isoformat(),
             "updated_at": n.updated_at.isoformat(), "payload": n.payload} for n in rows]
