"""A model's gate policy and golden set: anyone may read them, only approvers change them."""

from __future__ import annotations

from fastapi import APIRouter

from mlops_common.auth import Approver, Reader
from mlops_common.contracts import GoldenSetView, ModelPolicy, PolicyView
from registry_proxy.deps import PolicyStore
from registry_proxy.schemas import GoldenSetPin, PolicyUpdate, RollbackRequest

router = APIRouter(prefix="/models/{name}", tags=["policy"])


@router.get("/policy", response_model=PolicyView)
def get_policy(_: Reader, name: str, store: PolicyStore) -> PolicyView:
    return store.get(name)


@router.put("/policy", response_model=PolicyView)
def put_policy(actor: Approver, name: str, body: PolicyUpdate, store: PolicyStore) -> PolicyView:
    """A new revision of the policy; ``canary`` and ``shadow`` left out of the body keep the blocks in force."""
    keep = frozenset({"canary", "shadow"} - body.model_fields_set)
    return store.put(name, ModelPolicy(**body.model_dump(exclude={"reason"})), actor.name, body.reason, keep=keep)


@router.get("/golden-set", response_model=GoldenSetView)
def get_golden_set(_: Reader, name: str, store: PolicyStore) -> GoldenSetView:
    return store.golden_set(name)


@router.put("/golden-set", response_model=GoldenSetView)
def pin_golden_set(actor: Approver, name: str, body: GoldenSetPin, store: PolicyStore) -> GoldenSetView:
    """Pins a dataset snapshot (by sha256) as the model's golden set; pinning the proposed one accepts it."""
    return store.pin_golden(name, body.sha256, actor.name, body.reason or None, body.source, body.rows)


@router.delete("/golden-set", status_code=204, response_model=None)
def remove_golden_set(actor: Approver, name: str, store: PolicyStore, body: RollbackRequest | None = None) -> None:
    store.remove_golden(name, actor.name, body.reason if body else None)
