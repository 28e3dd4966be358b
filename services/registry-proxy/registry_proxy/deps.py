"""FastAPI dependencies, as ``Annotated`` aliases over the app's context (:class:`AppContext`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from mlops_common.auth import AuthError, Principal, bearer_token
from registry_proxy import mlflow_registry
from registry_proxy.context import AppContext
from registry_proxy.governance import Governance
from registry_proxy.identity import Identity
from registry_proxy.notifications import Notifier
from registry_proxy.policies import Policies
from registry_proxy.rollouts import Rollouts


def get_context(request: Request) -> AppContext:
    return request.app.state.ctx


Ctx = Annotated[AppContext, Depends(get_context)]


def registry(ctx: Ctx) -> mlflow_registry.Registry:
    return ctx.registry


def governance(ctx: Ctx) -> Governance:
    return Governance(ctx)


def identity(ctx: Ctx) -> Identity:
    return Identity(ctx.sessions)


def policies(ctx: Ctx) -> Policies:
    return Policies(ctx.sessions, ctx.settings)


def rollouts(ctx: Ctx) -> Rollouts:
    return Rollouts(ctx)


def notifier(ctx: Ctx) -> Notifier:
    return ctx.notifier


async def token_holder(request: Request) -> Principal:
    """The principal holding the request's bearer token, whatever its role (401 without a valid one)."""
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    try:
        principal = await request.app.state.authenticator.principal(token)
    except AuthError as exc:
        raise HTTPException(exc.status, exc.detail) from None
    if principal is None:
        raise HTTPException(401, "invalid bearer token: unknown, revoked or expired",
                            headers={"WWW-Authenticate": "Bearer"})
    return principal


Registry = Annotated[mlflow_registry.Registry, Depends(registry)]
Gov = Annotated[Governance, Depends(governance)]
Identities = Annotated[Identity, Depends(identity)]
PolicyStore = Annotated[Policies, Depends(policies)]
Rollout = Annotated[Rollouts, Depends(rollouts)]
Notifications = Annotated[Notifier, Depends(notifier)]
TokenHolder = Annotated[Principal, Depends(token_holder)]
