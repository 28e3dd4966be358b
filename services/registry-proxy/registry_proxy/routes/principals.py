"""Who is calling (any valid token), and the principals and their tokens (admins only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request

from mlops_common.auth import Admin, AuthError, Principal, bearer_token
from registry_proxy.context import Ctx
from registry_proxy.identity import Identity, expiry
from registry_proxy.schemas import NewToken, PrincipalCreate, PrincipalDetail, PrincipalView, TokenCreate, TokenView

router = APIRouter(tags=["identity"])


async def token_holder(request: Request) -> Principal:
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


@router.get("/auth/whoami", response_model=Principal)
async def whoami(principal: Annotated[Principal, Depends(token_holder)]) -> Principal:
    """The principal that holds the bearer token: what the other services ask before they let a call in."""
    return principal


def identity(ctx: Ctx) -> Identity:
    return Identity(ctx.sessions)


@router.post("/principals", status_code=201, response_model=PrincipalView)
def create_principal(body: PrincipalCreate, actor: Admin, ctx: Ctx) -> dict:
    return identity(ctx).create_principal(body.name, body.role, body.kind, actor.name)


@router.get("/principals", response_model=list[PrincipalView])
def list_principals(_: Admin, ctx: Ctx) -> list[dict]:
    return identity(ctx).list_principals()


@router.get("/principals/{name}", response_model=PrincipalDetail)
def get_principal(name: str, _: Admin, ctx: Ctx) -> dict:
    return identity(ctx).get_principal(name)


@router.delete("/principals/{name}", response_model=PrincipalView)
def disable_principal(name: str, actor: Admin, ctx: Ctx) -> dict:
    """Disables the principal and revokes its tokens (the row stays: audit rows name it)."""
    return identity(ctx).disable_principal(name, actor.name)


@router.post("/principals/{name}/tokens", status_code=201, response_model=NewToken)
def create_token(name: str, actor: Admin, ctx: Ctx, body: TokenCreate | None = None) -> dict:
    body = body or TokenCreate()
    return identity(ctx).create_token(name, actor.name, body.description,
                                      expiry(body.expires_in_days, body.expires_at))


@router.delete("/principals/{name}/tokens/{token_id}", response_model=TokenView)
def revoke_token(name: str, token_id: int, actor: Admin, ctx: Ctx) -> dict:
    return identity(ctx).revoke_token(name, token_id, actor.name)
