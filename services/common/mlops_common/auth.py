"""Identities and roles: the one place every service checks who is calling and what that role may do.

registry-proxy owns the principals and their API tokens (stored as hashes). The other services ask it who a
token belongs to (``GET /auth/whoami``) and keep the answer for ``AUTH_CACHE_SECONDS``, so a revoked token
stops working within that time and a prediction does not wait on a network call.

Roles, from least to most: ``viewer`` reads; ``scientist`` also uploads datasets, retrains and sends
feedback; ``approver`` also approves, promotes, rolls back and sets gate policies and golden sets; ``admin``
also manages principals. ``trainer`` is the trainer service's role: it reads and asks the gate, nothing else.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Annotated, Any, Literal, Protocol

import httpx
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict

Role = Literal["viewer", "scientist", "approver", "admin", "trainer"]
ROLES: tuple[Role, ...] = ("viewer", "scientist", "approver", "admin", "trainer")
HUMAN_ROLES: tuple[Role, ...] = ("viewer", "scientist", "approver", "admin")


class Permission(StrEnum):
    READ = "read"
    TRAIN = "train"  # upload datasets, retrain, alert webhooks
    FEEDBACK = "feedback"  # ground truth for predictions
    GATE = "gate"  # report a retrain job to the gate (the trainer service only)
    APPROVE = "approve"  # approve/reject, promote, rollback, incidents, gate policy, golden set
    ADMIN = "admin"  # principals and their tokens


GRANTS: dict[str, frozenset[Permission]] = {
    "viewer": frozenset({Permission.READ}),
    "scientist": frozenset({Permission.READ, Permission.TRAIN, Permission.FEEDBACK}),
    "approver": frozenset({Permission.READ, Permission.TRAIN, Permission.FEEDBACK, Permission.APPROVE}),
    "admin": frozenset({Permission.READ, Permission.TRAIN, Permission.FEEDBACK, Permission.APPROVE,
                        Permission.ADMIN}),
    "trainer": frozenset({Permission.READ, Permission.GATE}),
}


def roles_with(permission: Permission) -> list[str]:
    return [role for role in ROLES if permission in GRANTS[role]]


class Principal(BaseModel):
    """Who is calling. ``anonymous`` only ever reaches read routes, and only when reads are open."""

    model_config = ConfigDict(frozen=True)

    name: str
    role: Role | Literal["anonymous"]
    kind: Literal["person", "service", "anonymous"] = "person"

    def can(self, permission: Permission) -> bool:
        return permission in GRANTS.get(self.role, frozenset())


ANONYMOUS = Principal(name="anonymous", role="anonymous", kind="anonymous")


class AuthError(Exception):
    """A refused request: 401 (who are you?), 403 (not allowed) or 503 (cannot check right now)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"} if self.status == 401 else {}


class Authenticator(Protocol):
    async def principal(self, token: str) -> Principal | None:
        """The principal that holds this token, None when no valid token matches; AuthError(503) when unsure."""


def token_digest(token: str) -> str:
    """How tokens are stored and cached: never the token itself."""
    return hashlib.sha256(token.encode()).hexdigest()


class RemoteAuthenticator:
    """Asks registry-proxy, caching answers (valid ones for ``ttl`` seconds, refusals for a second)."""

    def __init__(self, registry_url: str, ttl: float, timeout: float = 5.0, max_entries: int = 10_000) -> None:
        self.url = f"{registry_url.rstrip('/')}/auth/whoami"
        self.ttl, self.timeout, self.max_entries = ttl, timeout, max_entries
        self.cache: dict[str, tuple[float, Principal | None]] = {}
        self._client: httpx.AsyncClient | None = None

    def cached(self, token: str) -> tuple[bool, Principal | None]:
        hit = self.cache.get(token_digest(token))
        if hit is not None and hit[0] > time.monotonic():
            return True, hit[1]
        return False, None

    async def principal(self, token: str) -> Principal | None:
        found, principal = self.cached(token)
        if found:
            return principal
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout)
        try:
            response = await self._client.get(self.url, headers={"Authorization": f"Bearer {token}"})
        except httpx.HTTPError as exc:
            raise AuthError(503, f"cannot verify the token: registry-proxy is unreachable ({type(exc).__name__})"
                            ) from None
        if response.status_code == 401:
            principal, ttl = None, min(self.ttl, 1.0)
        elif response.status_code == 200:
            principal, ttl = Principal.model_validate(response.json()), self.ttl
        else:
            raise AuthError(503, f"cannot verify the token: registry-proxy answered {response.status_code}")
        if len(self.cache) >= self.max_entries:
            self.cache.clear()
        self.cache[token_digest(token)] = (time.monotonic() + ttl, principal)
        return principal

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


def bearer_token(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


async def authorize(authenticator: Authenticator, authorization: str | None, permission: Permission,
                    open_reads: bool) -> Principal:
    """The principal behind an ``Authorization`` header if it may do ``permission``; AuthError otherwise."""
    token = bearer_token(authorization)
    if token is None:
        if permission is Permission.READ and open_reads:
            return ANONYMOUS
        raise AuthError(401, "missing bearer token: send 'Authorization: Bearer <your API token>'")
    principal = await authenticator.principal(token)
    if principal is None:
        raise AuthError(401, "invalid bearer token: unknown, revoked or expired")
    if not principal.can(permission):
        raise AuthError(403, f"principal {principal.name!r} (role {principal.role}) may not {permission.value}: "
                             f"that needs one of the roles {', '.join(roles_with(permission))}")
    return principal


_bearer = HTTPBearer(auto_error=False)


def requires(permission: Permission) -> Callable[..., Awaitable[Principal]]:
    """A FastAPI dependency: the calling principal, who may do ``permission``. The app keeps its
    authenticator in ``app.state.authenticator`` and its settings (for ``open_reads``) in
    ``app.state.auth_open_reads``."""

    async def dependency(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None,
                                                                  Depends(_bearer)]) -> Principal:
        header = f"{credentials.scheme} {credentials.credentials}" if credentials else None
        try:
            return await authorize(request.app.state.authenticator, header, permission,
                                   request.app.state.auth_open_reads)
        except AuthError as exc:
            raise HTTPException(exc.status, exc.detail, headers=exc.headers) from None

    dependency.__name__ = f"requires_{permission.value}"
    return dependency


Reader = Annotated[Principal, Depends(requires(Permission.READ))]
Trainer = Annotated[Principal, Depends(requires(Permission.TRAIN))]
FeedbackGiver = Annotated[Principal, Depends(requires(Permission.FEEDBACK))]
Gatekeeper = Annotated[Principal, Depends(requires(Permission.GATE))]
Approver = Annotated[Principal, Depends(requires(Permission.APPROVE))]
Admin = Annotated[Principal, Depends(requires(Permission.ADMIN))]


def describe(principal: Principal) -> dict[str, Any]:
    return principal.model_dump()
