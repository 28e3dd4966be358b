"""GET /ui: the page for the human in the loop.

A browser cannot send a bearer header on a page load, so when reads need a token the page also accepts it
from the ``registry_token`` cookie (set by the page's own sign-in form, SameSite=Strict). The cookie only
ever opens this read-only page: every change still needs the ``Authorization`` header. ``?model=`` and
``?action=`` narrow the page's audit table (as ``GET /audit`` does).

``/ui/plots/{name}/versions/{version}`` is the PNG the page's version comparison shows for each version: the
confusion matrix (or residual plot) the trainer logged in the version's run, read from MLflow through
registry-proxy's own user, under the same read check as the page (the browser sends the same cookie for it).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response

from mlops_common.auth import AuthError, Permission, authorize
from mlops_common.errors import NotFound, error_response
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
    refused = await _refused(request)
    if refused is not None:
        return HTMLResponse(sign_in_page(refused.detail), status_code=refused.status, headers=refused.headers)
    return HTMLResponse(await run_in_threadpool(render_page, ctx, model or None, action or None))


async def _refused(request: Request) -> AuthError | None:
    """Why this request may not read (None when it may): the bearer header, else the page's cookie."""
    header = request.headers.get("authorization")
    if header is None and request.cookies.get(COOKIE):
        header = f"Bearer {request.cookies[COOKIE]}"
    try:
        await authorize(request.app.state.authenticator, header, Permission.READ, request.app.state.auth_open_reads)
    except AuthError as exc:
        return exc
    return None


@router.get("/ui/plots/{name}/versions/{version}", include_in_schema=False)
async def plot(ctx: Ctx, request: Request, name: Annotated[str, Path(max_length=256)],
               version: Annotated[str, Path(max_length=32)]) -> Response:
    """The version's evaluation plot as a PNG. The page loads it lazily, one image per shown version; a
    browser may keep it a few minutes (a run's logged plot does not change). 404 when the version, its run or
    the plot is missing; 503 when MLflow is down (as every other registry-proxy read)."""
    refused = await _refused(request)
    if refused is not None:
        return error_response(refused.status, refused.detail, refused.headers)

    def read() -> bytes:
        run_id = ctx.registry.get_version(name, version).run_id
        found = ctx.registry.run_plot(run_id) if run_id else None
        if found is None:
            raise NotFound(f"version {version} of model {name!r} has no confusion matrix or residual plot in its "
                           "MLflow run")
        return found

    return Response(await run_in_threadpool(read), media_type="image/png",
                    headers={"Cache-Control": "private, max-age=300"})
