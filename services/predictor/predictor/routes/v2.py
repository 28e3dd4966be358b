"""Open Inference Protocol v2 (``/v2/...``): thin handlers over :mod:`predictor.oip`.

Every refusal on these routes, the Reader's 401/403 included, answers in the protocol's shape
``{"error": "..."}``. Server health and metadata are open like ``/health`` and ``/ready``; the model routes
take the same Reader as ``/predict``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute

from mlops_common.auth import Reader
from mlops_common.errors import ServiceError
from predictor import __version__, oip
from predictor.deps import Catalog, Settings
from predictor.routes.serving import read_body
from predictor.routing import MODEL_VERSION_HEADER, SERVED
from predictor.schemas import JSON_MEDIA_TYPE, request_body

log = logging.getLogger(__name__)


class ProtocolRoute(APIRoute):
    """A route whose refusals are the protocol's ``{"error": "..."}``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except ServiceError as exc:
                return oip.refusal(exc)
            except HTTPException as exc:
                return oip.error_response(exc.status_code, exc.detail, exc.headers)
            except RequestValidationError as exc:
                return oip.error_response(400, exc.errors())
            except Exception as exc:
                log.exception("unexpected error on %s", request.url.path)
                return oip.error_response(500, f"internal error: {type(exc).__name__}")

        return route


router = APIRouter(prefix="/v2", tags=["open inference protocol v2"], route_class=ProtocolRoute)

ERRORS: dict[int | str, dict] = {
    401: {"model": oip.ProtocolError, "description": "no token while reads need one"},
    404: {"model": oip.ProtocolError, "description": "a model or version this predictor does not serve"},
    503: {"model": oip.ProtocolError, "description": "no version served yet"},
}
INFER_ERRORS: dict[int | str, dict] = {
    **ERRORS,
    400: {"model": oip.ProtocolError,
          "description": "a tensor whose name, datatype or shape does not match the model's metadata"},
    413: {"model": oip.ProtocolError, "description": "body over MAX_BODY_BYTES"},
}


@router.get("", response_model=oip.ServerMetadata)
async def server_metadata() -> oip.ServerMetadata:
    return oip.ServerMetadata(name="predictor", version=__version__, extensions=["binary_tensor_data"])


@router.get("/health/live", response_model=oip.Live)
async def live() -> oip.Live:
    return oip.Live(live=True)


@router.get("/health/ready", response_model=oip.Ready, responses={503: ERRORS[503]})
async def ready(models: Catalog) -> oip.Ready:
    oip.served(models, models.default.name)
    return oip.Ready(ready=True)


@router.get("/models/{name}", response_model=oip.ModelMetadata, responses=ERRORS)
async def model_metadata(name: str, models: Catalog, _: Reader) -> oip.ModelMetadata:
    return oip.metadata(oip.served(models, name))


@router.get("/models/{name}/versions/{version}", response_model=oip.ModelMetadata, responses=ERRORS)
async def version_metadata(name: str, version: str, models: Catalog, _: Reader) -> oip.ModelMetadata:
    return oip.metadata(oip.served(models, name, version))


@router.get("/models/{name}/ready", response_model=oip.ModelReady, responses=ERRORS)
async def model_ready(name: str, models: Catalog, _: Reader) -> oip.ModelReady:
    model = oip.served(models, name)
    return oip.ModelReady(name=model.name, version=model.version, ready=True)


@router.get("/models/{name}/versions/{version}/ready", response_model=oip.ModelReady, responses=ERRORS)
async def version_ready(name: str, version: str, models: Catalog, _: Reader) -> oip.ModelReady:
    model = oip.served(models, name, version)
    return oip.ModelReady(name=model.name, version=model.version, ready=True)


async def _infer(request: Request, models: Catalog, cfg: Settings, name: str, version: str | None) -> Response:
    """What the app answers when the fast path (predictor.fastpath) is not in front of it: the same scoring."""
    body = await read_body(request, cfg.max_body_bytes)
    content = await oip.infer_body(models, name, version, body, request.headers.get(oip.HEADER_LENGTH),
                                   request.scope)
    return Response(content, media_type=JSON_MEDIA_TYPE, headers={MODEL_VERSION_HEADER: request.scope[SERVED]})


@router.post("/models/{name}/infer", response_model=oip.InferResponse, responses=INFER_ERRORS,
             openapi_extra=request_body(oip.InferRequest))
async def infer(name: str, request: Request, models: Catalog, cfg: Settings, _: Reader) -> Response:
    """Score the instances the input tensors hold with the served version."""
    return await _infer(request, models, cfg, name, None)


@router.post("/models/{name}/versions/{version}/infer", response_model=oip.InferResponse,
             responses=INFER_ERRORS, openapi_extra=request_body(oip.InferRequest))
async def version_infer(name: str, version: str, request: Request, models: Catalog, cfg: Settings,
                        _: Reader) -> Response:
    """Score with this version, if it is the served one."""
    return await _infer(request, models, cfg, name, version)
