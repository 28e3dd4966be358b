"""GET /ui: the page for the human in the loop.

A browser cannot send a bearer header on a page load, so when reads need a token the page also accepts it
from the ``registry_token`` cookie (set by the page's own sign-in form, SameSite=Strict). The cookie only
ever opens this read-only page: every change still needs the ``Authorization`` header. ``?model=`` and
``?action=`` narrow the page's audit table (as ``GET /audit`` does).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from mlops_common.auth import AuthError, Permission, authorize
from registry_proxy.deps import Ctx
from registry_proxy.ui import render_page, sign_in_page

router = APIRouter(tags=["ui"])
COOKIE = "registry_token"


@router.get("/ui", response_class=HTMLResponse, include_in_schema=False)
async def page(ctx: Ctx, request: Request,
               model: Annotated[str | None, Query(max_length=256, description="audit rows of this model only")]
               = None,
               action: Annotated[str | None, Query(max_length=48, description="audit rows of this action only")]
               = None) -> HTMLResponse:
    header = request.headers.get("authorization")
    if header is None and request.cookies.get(COOKIE):
        header = f"Bearer {request.cookies[COOKIE]}"
    try:
        await authorize(request.app.state.authenticator, header, Permission.READ, request.app.state.auth_open_reads)
    except AuthError as exc:
        return HTMLResponse(sign_in_page(exc.detail), status_code=exc.status, headers=exc.headers)
    return HTMLResponse(await run_in_threadpool(render_page, ctx, model or None, action or None))
