"""Human decisions on gate results that need one."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from mlops_common.auth import Approver, Reader
from registry_proxy.deps import Gov
from registry_proxy.schemas import DecisionAction, DecisionView

router = APIRouter(prefix="/decisions", tags=["decisions"])


@router.get("", response_model=list[DecisionView])
def list_decisions(_: Reader, governance: Gov,
                   status: Literal["pending", "approved", "rejected", "superseded"] | None = None,
                   model: str | None = None,
                   limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[dict[str, Any]]:
    return governance.decisions(status=status, model=model, limit=limit)


@router.get("/{decision_id}", response_model=DecisionView)
def get_decision(_: Reader, governance: Gov, decision_id: int) -> dict[str, Any]:
    return governance.decision(decision_id)


@router.post("/{decision_id}/approve", response_model=DecisionView)
def approve(actor: Approver, governance: Gov, decision_id: int, body: DecisionAction | None = None) -> dict[str, Any]:
    return governance.decide(decision_id, True, body.comment if body else "", actor.name)


@router.post("/{decision_id}/reject", response_model=DecisionView)
def reject(actor: Approver, governance: Gov, decision_id: int, body: DecisionAction | None = None) -> dict[str, Any]:
    return governance.decide(decision_id, False, body.comment if body else "", actor.name)
