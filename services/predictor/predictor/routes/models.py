"""Every model this predictor serves: ``/models/{name}/predict``, a version's ``/models/{name}/versions/{v}/predict``
(answered by the fast path; these routes run the same service code and document the bodies), what is served
and feedback per model."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from mlops_common.auth import FeedbackGiver, Reader
from predictor.deps import Catalog, Settings
from predictor.fastpath import MODEL_PATH, VERSION_PATH
from predictor.routes.serving import REFUSALS, answer, read_body
from predictor.schemas import (
    ErrorBody,
    FeedbackRequest,
    FeedbackResponse,
    ModelInfo,
    PredictRequest,
    PredictResponse,
    ServedModels,
    request_body,
)

router = APIRouter(tags=["models"])

UNKNOWN: dict[int | str, dict] = {404: {"model": ErrorBody, "description": "a model this predictor does not serve"}}
VERSION_REFUSALS: dict[int | str, dict] = {
    **REFUSALS,
    404: {"model": ErrorBody, "description": "a model this predictor does not serve, or a version not registered"},
    503: {"model": ErrorBody, "description": "the version is loading (see Retry-After), or could not be loaded"},
}


@router.get("/models", response_model=ServedModels)
async def served_models(models: Catalog, _: Reader) -> Any:
    """The models served, each with its production version and the other versions held in memory."""
    return {"models": models.summary()}


@router.get("/models/{name}", response_model=ModelInfo, responses=UNKNOWN)
async def model_info(name: str, models: Catalog, _: Reader) -> Any:
    """As ``GET /model``, for the named model."""
    return models.get(name).describe()


@router.post(MODEL_PATH, response_model=PredictResponse, responses={**REFUSALS, **UNKNOWN},
             openapi_extra=request_body(PredictRequest))
async def predict(name: str, request: Request, models: Catalog, cfg: Settings, _: Reader) -> Response:
    """As ``POST /predict``, with the named model's production version."""
    service = models.get(name)
    return await answer(service.predict(await read_body(request, cfg.max_body_bytes), request.scope), request)


@router.post(VERSION_PATH, response_model=PredictResponse, responses=VERSION_REFUSALS,
             openapi_extra=request_body(PredictRequest))
async def predict_version(name: str, version: str, request: Request, models: Catalog, cfg: Settings,
                          _: Reader) -> Response:
    """As ``POST /predict``, with this version of the named model: loaded on the first request (503 with
    Retry-After until it is), unloaded when least recently used beyond MAX_LOADED_VERSIONS."""
    service = models.get(name)
    return await answer(service.predict(await read_body(request, cfg.max_body_bytes), request.scope, version),
                        request)


@router.post("/models/{name}/feedback", response_model=FeedbackResponse, response_model_exclude_none=True,
             responses={**UNKNOWN, 409: {"model": ErrorBody, "description": "feedback already recorded"}})
async def feedback(name: str, body: FeedbackRequest, models: Catalog, _: FeedbackGiver) -> Any:
    """As ``POST /feedback``, for a prediction of the named model."""
    return await models.get(name).feedback(body)
