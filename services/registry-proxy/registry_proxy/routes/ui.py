"""GET /ui: the page for the human in the loop."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from registry_proxy.context import Ctx
from registry_proxy.ui import render_page

router = APIRouter(tags=["ui"])


@router.get("/ui", response_class=HTMLResponse, include_in_schema=False)
def page(ctx: Ctx) -> HTMLResponse:
    return HTMLResponse(render_page(ctx))
