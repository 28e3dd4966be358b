"""Models and versions: open reads; gate, promote, rollback and incidents behind a bearer token."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from mlops_common.auth import Approver, Gatekeeper, Reader
from mlops_common.contracts import GateOutcome, GateRequest
from registry_proxy import dora, views
from registry_proxy.deps import Ctx, Gov, Registry
from registry_proxy.schemas import (
    DoraReport,
    IncidentRequest,
    IncidentView,
    ModelDetail,
    ModelSummary,
    PromoteRequest,
    PromoteResult,
    RollbackRequest,
    RollbackResult,
    VersionView,
)

router = APIRouter(prefix="/models", tags=["models"])


@router.get("", response_model=list[ModelSummary])
def list_models(_: Reader, registry: Registry) -> list[dict[str, Any]]:
    return views.list_models(registry)


@router.get("/{name}", response_model=ModelDetail)
def get_model(_: Reader, registry: Registry, name: str,
              limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
    return views.model_detail(registry, name, limit)


@router.get("/{name}/versions/{version}", response_model=VersionView)
def get_version(_: Reader, registry: Registry, name: str, version: str) -> dict[str, Any]:
    return views.version_detail(registry, name, version)


@router.post("/{name}/gate", response_model=GateOutcome)
def gate(actor: Gatekeeper, governance: Gov, name: str, body: GateRequest) -> dict[str, Any]:
    """The trainer's report of a retrain job: registers its model and applies the model's gate policy."""
    return governance.gate(name, body, actor.name)


@router.post("/{name}/promote", response_model=PromoteResult)
def promote(actor: Approver, governance: Gov, name: str, body: PromoteRequest) -> dict[str, Any]:
    return governance.promote(name, body.version, body.reason, actor.name)


@router.post("/{name}/rollback", response_model=RollbackResult)
def rollback(actor: Approver, governance: Gov, name: str, body: RollbackRequest | None = None) -> dict[str, Any]:
    return governance.rollback(name, body.reason if body else "", actor.name)


@router.post("/{name}/incidents", status_code=201, response_model=IncidentView)
def open_incident(actor: Approver, governance: Gov, name: str, body: IncidentRequest) -> dict[str, Any]:
    return governance.open_incident(name, body.reason, actor.name)


@router.get("/{name}/dora", response_model=DoraReport)
def get_dora(_: Reader, ctx: Ctx, name: str,
             window_days: Annotated[float | None, Query(gt=0, le=3650)] = None) -> dict[str, Any]:
    return dora.report(ctx.sessions, ctx.registry, name, window_days or ctx.settings.dora_window_days)
