"""Bearer tokens: REGISTRY_ADMIN_TOKEN for people, REGISTRY_SERVICE_TOKEN for the trainer."""

from __future__ import annotations

import hmac
from typing import Annotated, Literal

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from registry_proxy.settings import RegistrySettings

Actor = Literal["admin", "service"]

_bearer = HTTPBearer(auto_error=False)


def _matches(given: str, expected: str) -> bool:
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def actor_for(token: str, settings: RegistrySettings) -> Actor | None:
    if _matches(token, settings.registry_admin_token):
        return "admin"
    if _matches(token, settings.registry_service_token):
        return "service"
    return None


def require_actor(request: Request,
                  credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Actor:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    actor = actor_for(credentials.credentials, request.app.state.ctx.settings)
    if actor is None:
        raise HTTPException(401, "invalid bearer token", headers={"WWW-Authenticate": "Bearer"})
    return actor


CurrentActor = Annotated[Actor, Depends(require_actor)]


def require_admin(actor: CurrentActor) -> Actor:
    if actor != "admin":
        raise HTTPException(403, "a pending decision is a human's: approve or reject it with REGISTRY_ADMIN_TOKEN")
    return actor


AdminActor = Annotated[Actor, Depends(require_admin)]
