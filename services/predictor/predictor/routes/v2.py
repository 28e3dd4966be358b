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
from predictor.deps import Service, Settings
from predictor.routes.serving import read_body
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
async def ready(svc: Service) -> oip.Ready:
    oip.served(svc, svc.name)
    return oip.Ready(ready=True)


@router.get("/models/{name}", response_model=oip.ModelMetadata, responses=ERRORS)
async def model_metadata(name: str, svc: Service, _: Reader) -> oip.ModelMetadata:
    return oip.metadata(oip.served(svc, name))


@router.get("/models/{name}/versions/{version}", response_model=oip.ModelMetadata, responses=ERRORS)
async def version_metadata(name: str, version: str, svc: Service, _: Reader) -> oip.ModelMetadata:
    return oip.metadata(oip.served(svc, name, version))


@router.get("/models/{name}/ready", response_model=oip.ModelReady, responses=ERRORS)
async def model_ready(name: str, svc: Service, _: Reader) -> oip.ModelReady:
    model = oip.served(svc, name)
    return oip.ModelReady(name=model.name, version=model.version, ready=True)


@router.get("/models/{name}/versions/{version}/ready", response_model=oip.ModelReady, responses=ERRORS)
async def version_ready(name: str, version: str, svc: Service, _: Reader) -> oip.ModelReady:
    model = oip.served(svc, name, version)
    return oip.ModelReady(name=model.name, version=model.version, ready=True)


async def _infer(request: Request, svc: Service, cfg: Settings, name: str, version: str | None) -> Response:
    model = oip.served(svc, name, version)
    body = await read_body(request, cfg.max_body_bytes)
    parsed = oip.parse(body, request.headers.get(oip.HEADER_LENGTH))
    return Response(await oip.infer(svc, model, parsed), media_type=JSON_MEDIA_TYPE)


@router.post("/models/{name}/infer", response_model=oip.InferResponse, responses=INFER_ERRORS,
             openapi_extra=request_body(oip.InferRequest))
async def infer(name: str, request: Request, svc: Service, cfg: Settings, _: Reader) -> Response:
    """Score the instances the input tensors hold with the served version."""
    return await _infer(request, svc, cfg, name, None)


@router.post("/models/{name}/versions/{version}/infer", response_model=oip.InferResponse,
             responses=INFER_ERRORS, openapi_extra=request_body(oip.InferRequest))
async def version_infer(name: str, version: str, request: Request, svc: Service, cfg: Settings,
                        _: Reader) -> Response:
    """Score with this version, if it is the served one."""
    return await _infer(request, svc, cfg, name, version)
