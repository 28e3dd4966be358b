"""What was sent to the webhook, and how it went."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from mlops_common.auth import Reader
from registry_proxy.deps import Notifications
from registry_proxy.schemas import NotificationView

router = APIRouter(tags=["notifications"])


@router.get("/notifications", response_model=list[NotificationView])
def list_notifications(_: Reader, notifier: Notifications, model: str | None = None,
                       status: Literal["pending", "sent", "failed"] | None = None,
                       limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[dict[str, Any]]:
    return notifier.recent(model=model, status=status, limit=limit)
