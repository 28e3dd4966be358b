"""Human decisions on gate results that need one."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from sqlalchemy import select

from mlops_common.auth import Approver, Reader
from registry_proxy.context import Ctx
from registry_proxy.db import Decision
from registry_proxy.errors import NotFound
from registry_proxy.governance import Governance, decision_dict
from registry_proxy.schemas import DecisionAction

router = APIRouter(prefix="/decisions", tags=["decisions"])


@router.get("")
def list_decisions(ctx: Ctx, _: Reader, status: Literal["pending", "approved", "rejected", "superseded"] | None = None,
                   model: str | None = None,
                   limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[dict[str, Any]]:
    query = select(Decision).order_by(Decision.id.desc()).limit(limit)
    if status:
        query = query.where(Decision.status == status)
    if model:
        query = query.where(Decision.model_name == model)
    with ctx.sessions() as session:
        return [decision_dict(d, ctx) for d in session.scalars(query)]


@router.get("/{decision_id}")
def get_decision(ctx: Ctx, _: Reader, decision_id: int) -> dict[str, Any]:
    with ctx.sessions() as session:
        decision = session.get(Decision, decision_id)
        if decision is None:
            raise NotFound(f"decision {decision_id} not found")
        return decision_dict(decision, ctx)


@router.post("/{decision_id}/approve")
def approve(ctx: Ctx, actor: Approver, decision_id: int, body: DecisionAction | None = None) -> dict[str, Any]:
    return Governance(ctx).decide(decision_id, True, body.comment if body else "", actor.name)


@router.post("/{decision_id}/reject")
def reject(ctx: Ctx, actor: Approver, decision_id: int, body: DecisionAction | None = None) -> dict[str, Any]:
    return Governance(ctx).decide(decision_id, False, body.comment if body else "", actor.name)
