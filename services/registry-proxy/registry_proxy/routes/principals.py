"""Who is calling (any valid token), and the principals and their tokens (admins only)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from mlops_common.auth import Admin, Principal
from registry_proxy.deps import Identities, TokenHolder
from registry_proxy.identity import expiry
from registry_proxy.schemas import NewToken, PrincipalCreate, PrincipalDetail, PrincipalView, TokenCreate, TokenView

router = APIRouter(tags=["identity"])


@router.get("/auth/whoami", response_model=Principal)
async def whoami(principal: TokenHolder) -> Principal:
    """The principal that holds the bearer token: what the other services ask before they let a call in."""
    return principal


@router.post("/principals", status_code=201, response_model=PrincipalView)
def create_principal(actor: Admin, body: PrincipalCreate, identity: Identities) -> dict[str, Any]:
    return identity.create_principal(body.name, body.role, body.kind, actor.name)


@router.get("/principals", response_model=list[PrincipalView])
def list_principals(_: Admin, identity: Identities) -> list[dict[str, Any]]:
    return identity.list_principals()


@router.get("/principals/{name}", response_model=PrincipalDetail)
def get_principal(_: Admin, name: str, identity: Identities) -> dict[str, Any]:
    return identity.get_principal(name)


@router.delete("/principals/{name}", response_model=PrincipalView)
def disable_principal(actor: Admin, name: str, identity: Identities) -> dict[str, Any]:
    """Disables the principal and revokes its tokens (the row stays: audit rows name it)."""
    return identity.disable_principal(name, actor.name)


@router.post("/principals/{name}/tokens", status_code=201, response_model=NewToken)
def create_token(actor: Admin, name: str, identity: Identities, body: TokenCreate | None = None) -> dict[str, Any]:
    body = body or TokenCreate()
    return identity.create_token(name, actor.name, body.description, expiry(body.expires_in_days, body.expires_at))


@router.delete("/principals/{name}/tokens/{token_id}", response_model=TokenView)
def revoke_token(actor: Admin, name: str, token_id: int, identity: Identities) -> dict[str, Any]:
    return identity.revoke_token(name, token_id, actor.name)
