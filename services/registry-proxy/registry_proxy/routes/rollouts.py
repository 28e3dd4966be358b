"""Rollouts of a model: canaries (start, watch, pause / resume / abort, approve), shadow periods, and the split
predictors follow."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from mlops_common.auth import Approver, Reader
from registry_proxy.deps import Rollout
from registry_proxy.schemas import (
    CanaryAction,
    CanaryStart,
    CanaryView,
    RolloutView,
    ShadowDetail,
    ShadowStart,
    ShadowView,
)

router = APIRouter(prefix="/models", tags=["rollouts"])


@router.post("/{name}/canary", status_code=201, response_model=CanaryView)
def start_canary(actor: Approver, rollouts: Rollout, name: str, body: CanaryStart) -> dict[str, Any]:
    """Starts a canary of a validated version: it takes ``steps[0]`` % of traffic, then the next step after each
    ``interval`` whose analysis passed; a failed check rolls it back."""
    return rollouts.start(name, body, actor.name)


@router.get("/{name}/canary", response_model=CanaryView)
def get_canary(_: Reader, rollouts: Rollout, name: str) -> dict[str, Any]:
    """The model's latest canary (under way or ended), with the checks of every step."""
    return rollouts.latest(name)


@router.get("/{name}/rollout", response_model=RolloutView)
def get_rollout(_: Reader, rollouts: Rollout, name: str) -> dict[str, Any]:
    """The split predictors follow: production's version and, during a canary, the canary's version and share."""
    return rollouts.rollout(name)


@router.post("/{name}/canary/pause", response_model=CanaryView)
def pause_canary(actor: Approver, rollouts: Rollout, name: str, body: CanaryAction | None = None) -> dict[str, Any]:
    return rollouts.pause(name, body.reason if body else "", actor.name)


@router.post("/{name}/canary/resume", response_model=CanaryView)
def resume_canary(actor: Approver, rollouts: Rollout, name: str, body: CanaryAction | None = None) -> dict[str, Any]:
    return rollouts.resume(name, body.reason if body else "", actor.name)


@router.post("/{name}/canary/abort", response_model=CanaryView)
def abort_canary(actor: Approver, rollouts: Rollout, name: str, body: CanaryAction | None = None) -> dict[str, Any]:
    return rollouts.abort(name, body.reason if body else "", actor.name)


@router.post("/{name}/canary/approve", response_model=CanaryView)
def approve_canary(actor: Approver, rollouts: Rollout, name: str, body: CanaryAction | None = None) -> dict[str, Any]:
    """Promotes a canary that passed every step and waits for a human (``require_approval``)."""
    return rollouts.approve(name, body.reason if body else "", actor.name)


@router.post("/{name}/shadow", status_code=201, response_model=ShadowView)
def start_shadow(actor: Approver, rollouts: Rollout, name: str, body: ShadowStart) -> dict[str, Any]:
    """Mirrors ``share`` % of the model's live requests to a validated version, off the request path."""
    return rollouts.start_shadow(name, body, actor.name)


@router.get("/{name}/shadow", response_model=ShadowDetail)
def get_shadow(_: Reader, rollouts: Rollout, name: str) -> dict[str, Any]:
    """The model's latest shadow period with its live evidence from Prometheus and what the policy still lacks."""
    return rollouts.shadow(name)


@router.delete("/{name}/shadow", response_model=ShadowView)
def stop_shadow(actor: Approver, rollouts: Rollout, name: str, body: CanaryAction | None = None) -> dict[str, Any]:
    return rollouts.stop_shadow(name, body.reason if body else "", actor.name)
