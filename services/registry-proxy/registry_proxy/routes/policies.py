"""A model's gate policy and golden set: anyone may read them, only approvers change them."""

from __future__ import annotations

from fastapi import APIRouter

from mlops_common.auth import Approver, Reader
from mlops_common.contracts import GatePolicy, GoldenSetView, PolicyView
from registry_proxy import policies
from registry_proxy.context import Ctx
from registry_proxy.errors import NotFound
from registry_proxy.schemas import GoldenSetPin, PolicyUpdate, RollbackRequest

router = APIRouter(prefix="/models/{name}", tags=["policy"])


@router.get("/policy", response_model=PolicyView)
def get_policy(name: str, _: Reader, ctx: Ctx) -> PolicyView:
    with ctx.sessions() as session:
        return policies.get(session, ctx.settings, name)


@router.put("/policy", response_model=PolicyView)
def put_policy(name: str, body: PolicyUpdate, actor: Approver, ctx: Ctx) -> PolicyView:
    policy = GatePolicy(**body.model_dump(exclude={"reason"}))
    with ctx.sessions() as session, session.begin():
        return policies.put(session, name, policy, actor.name, body.reason)


@router.get("/golden-set", response_model=GoldenSetView)
def get_golden_set(name: str, _: Reader, ctx: Ctx) -> GoldenSetView:
    with ctx.sessions() as session:
        row = policies.golden(session, name)
        if row is None:
            raise NotFound(f"model {name!r} has no golden set")
        return policies.golden_view(row)


@router.put("/golden-set", response_model=GoldenSetView)
def pin_golden_set(name: str, body: GoldenSetPin, actor: Approver, ctx: Ctx) -> GoldenSetView:
    """Pins a dataset snapshot (by sha256) as the model's golden set; pinning the proposed one accepts it."""
    with ctx.sessions() as session, session.begin():
        return policies.pin_golden(session, name, body.sha256, actor.name, body.reason or None, body.source,
                                   body.rows)


@router.delete("/golden-set", status_code=204)
def remove_golden_set(name: str, actor: Approver, ctx: Ctx, body: RollbackRequest | None = None) -> None:
    with ctx.sessions() as session, session.begin():
        policies.remove_golden(session, name, actor.name, body.reason if body else None)
