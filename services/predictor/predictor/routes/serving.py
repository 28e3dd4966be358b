"""POST /predict and /invocations behind FastAPI, and MLflow's scoring-server GET /ping and /version.

/predict and /invocations are normally answered by :class:`predictor.fastpath.FastPredict` before FastAPI sees
them; these routes run the same service code and give the same answers (for apps without the middleware), and
document the bodies.
"""

from __future__ import annotations

from collections.abc import Awaitable

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from mlflow.version import VERSION as MLFLOW_VERSION

from mlops_common.auth import Reader
from mlops_common.errors import ServiceError
from predictor.deps import Service, Settings
from predictor.errors import not_serving
from predictor.fastpath import INVOCATIONS, PATH, too_large
from predictor.routing import MODEL_VERSION_HEADER, SERVED
from predictor.schemas import (
    JSON_MEDIA_TYPE,
    ErrorBody,
    InvocationsRequest,
    InvocationsResponse,
    MlflowError,
    PredictRequest,
    PredictResponse,
    request_body,
)

router = APIRouter(tags=["serving"])

REFUSALS: dict[int | str, dict] = {
    400: {"model": ErrorBody, "description": "malformed JSON"},
    413: {"model": ErrorBody, "description": "body over MAX_BODY_BYTES"},
    422: {"model": ErrorBody, "description": "instances that do not fit the served version (the field is named)"},
    503: {"model": ErrorBody, "description": "no version served yet"},
}
PROTOCOL_REFUSALS: dict[int | str, dict] = {
    400: {"model": MlflowError, "description": "input MLflow cannot parse, or the model cannot score (an "
                                                "input that does not fit the signature: INVALID_PARAMETER_VALUE)"},
    413: {"model": ErrorBody, "description": "body over MAX_BODY_BYTES"},
    415: {"model": MlflowError, "description": "neither JSON, CSV nor Parquet, a charset other than UTF-8, or "
                                               "another Content-Type parameter"},
    422: {"model": MlflowError, "description": "more than MAX_INSTANCES rows"},
    503: {"model": ErrorBody, "description": "no version served yet"},
}


async def read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise too_large(limit, int(length))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def answer(content: Awaitable[bytes], request: Request | None = None) -> Response:
    """The service's answer (with the version that answered it, ``X-Model-Version``), or its refusal rendered
    by the refusal itself (as the fast path does)."""
    try:
        body = await content
        served = request.scope.get(SERVED) if request is not None else None
        return Response(body, media_type=JSON_MEDIA_TYPE,
                        headers={MODEL_VERSION_HEADER: served} if served is not None else None)
    except ServiceError as exc:
        return Response(exc.body(), status_code=exc.status_code, headers=exc.headers, media_type=JSON_MEDIA_TYPE)


@router.post(PATH, response_model=PredictResponse, responses=REFUSALS, openapi_extra=request_body(PredictRequest))
async def predict(request: Request, svc: Service, cfg: Settings, _: Reader) -> Response:
    """Score instances with the production version: ``{"instances": [...], "probabilities": false}``,
    strings for text models, records for tabular ones."""
    return await answer(svc.predict(await read_body(request, cfg.max_body_bytes), request.scope), request)


@router.post(INVOCATIONS, response_model=InvocationsResponse, responses=PROTOCOL_REFUSALS,
             openapi_extra=request_body(InvocationsRequest, csv=True))
async def invocations(request: Request, svc: Service, cfg: Settings, _: Reader) -> Response:
    """MLflow's scoring protocol (as ``mlflow models serve``): ``dataframe_split``, ``dataframe_records``,
    ``instances`` or ``inputs`` as JSON, or a frame as CSV or Parquet (``application/vnd.apache.parquet``)."""
    body = await read_body(request, cfg.max_body_bytes)
    return await answer(svc.invocations(body, request.headers.get("content-type", ""), request.scope), request)


def plain_text(example: str) -> dict[int | str, dict]:
    return {200: {"content": {"text/plain": {"schema": {"type": "string"}, "example": example}}}}


@router.get("/ping", response_class=PlainTextResponse,
            responses={**plain_text("\n"), 503: {"model": ErrorBody, "description": "no version served yet"}})
async def ping(svc: Service) -> PlainTextResponse:
    """MLflow's scoring-server health check (what ``ScoringServerClient.wait_server_ready`` polls): 200 once a
    version is served."""
    if svc.model is None:
        raise not_serving(svc.name)
    return PlainTextResponse("\n")


@router.get("/version", response_class=PlainTextResponse, responses=plain_text(MLFLOW_VERSION))
async def version() -> PlainTextResponse:
    """The version of MLflow that parses and scores /invocations, as ``mlflow models serve`` answers it."""
    return PlainTextResponse(MLFLOW_VERSION)
