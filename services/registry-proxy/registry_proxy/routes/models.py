"""Models and versions: open reads; gate, promote, rollback and incidents behind a bearer token."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import select

from mlops_common.auth import Approver, Gatekeeper, Reader
from mlops_common.contracts import GateOutcome, GateRequest
from registry_proxy import dora
from registry_proxy.context import Ctx
from registry_proxy.db import AuditEntry
from registry_proxy.governance import Governance
from registry_proxy.schemas import IncidentRequest, PromoteRequest, RollbackRequest
from registry_proxy.views import model_summary, version_view

router = APIRouter(prefix="/models", tags=["models"])


@router.get("")
def list_models(ctx: Ctx, _: Reader) -> list[dict[str, Any]]:
    return [model_summary(m) for m in ctx.registry.list_models()]


@router.get("/{name}")
def get_model(ctx: Ctx, _: Reader, name: str, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
    summary = model_summary(ctx.registry.get_model(name))
    versions = ctx.registry.versions(name)[:limit]
    return {**summary, "versions": [version_view(v, ctx.registry, summary["aliases"]) for v in versions]}


@router.get("/{name}/versions/{version}")
def get_version(ctx: Ctx, _: Reader, name: str, version: str) -> dict[str, Any]:
    mv = ctx.registry.get_version(name, version)
    return version_view(mv, ctx.registry, ctx.registry.aliases(name))


@router.post("/{name}/gate", response_model=GateOutcome)
def gate(ctx: Ctx, actor: Gatekeeper, name: str, body: GateRequest) -> dict[str, Any]:
    return Governance(ctx).gate(name, body, actor.name)


@router.post("/{name}/promote")
def promote(ctx: Ctx, actor: Approver, name: str, body: PromoteRequest) -> dict[str, Any]:
    return Governance(ctx).promote(name, body.version, body.reason, actor.name)


@router.post("/{name}/rollback")
def rollback(ctx: Ctx, actor: Approver, name: str, body: RollbackRequest | None = None) -> dict[str, Any]:
    ctx.registry.get_model(name)
    return Governance(ctx).rollback(name, body.reason if body else "", actor.name)


@router.post("/{name}/incidents", status_code=201)
def open_incident(ctx: Ctx, actor: Approver, name: str, body: IncidentRequest) -> dict[str, Any]:
    return Governance(ctx).open_incident(name, body.reason, actor.name)


@router.get("/{name}/dora")
def get_dora(ctx: Ctx, _: Reader, name: str,
             window_days: Annotated[float | None, Query(gt=0, le=3650)] = None) -> dict[str, Any]:
    with ctx.sessions() as session:
        if session.scalar(select(AuditEntry.id).where(AuditEntry.model_name == name).limit(1)) is None:
            ctx.registry.get_model(name)  # never audited: 404 unless MLflow knows the model
        return dora.compute(session, name, window_days or ctx.settings.dora_window_days)
