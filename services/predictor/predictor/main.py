"""predictor: serves ``models:/<MODEL_NAME>@production`` and follows the alias without restarts."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import orjson
import sklearn
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from mlops_common.auth import FeedbackGiver, Reader, RemoteAuthenticator
from mlops_common.observability import configure_logging, instrument
from predictor import fastpath, invocations
from predictor.fastpath import FastPredict
from predictor.feedback import FeedbackError
from predictor.service import PredictorService
from predictor.settings import PredictorSettings, get_settings

log = logging.getLogger("predictor")


class Problem(Exception):
    def __init__(self, status: int, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.detail, self.extra = status, detail, extra


def json_response(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


def problem(status: int, detail: str, **extra: Any) -> Response:
    return json_response({"detail": detail, **extra}, status)


def configure_process(settings: PredictorSettings) -> None:
    """What the serving process sets outside the app, once, when it starts (the lifespan; the loader process
    started after it inherits the environment)."""
    configure_logging(settings.log_level, settings.log_format)
    # Served models are fitted and their inputs validated here: skip sklearn's per-call parameter validation and
    # finiteness checks (about a third of a small predict call). Thread-local: set for the event loop's thread,
    # which runs the lifespan.
    sklearn.set_config(assume_finite=True, skip_parameter_validation=True)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # Fail a registry read within seconds rather than minutes: the next poll retries anyway.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    if settings.allow_model_deserialization:
        os.environ.setdefault("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    settings.apply_mlflow_credentials()


async def get_service(request: Request) -> PredictorService:
    service: PredictorService = request.app.state.service
    return service


async def get_config(request: Request) -> PredictorSettings:
    settings: PredictorSettings = request.app.state.settings
    return settings


Service = Annotated[PredictorService, Depends(get_service)]
Settings = Annotated[PredictorSettings, Depends(get_config)]
router = APIRouter()


async def _problem(_: Request, exc: Problem) -> Response:
    return problem(exc.status, exc.detail, **exc.extra)


async def _invalid(_: Request, exc: RequestValidationError) -> Response:
    errors = exc.errors()
    detail = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()) if x != 'body') or 'body'}: {e.get('msg')}"
                       for e in errors) or "invalid request"
    return problem(422, detail)


async def _http(_: Request, exc: StarletteHTTPException) -> Response:
    response = problem(exc.status_code, str(exc.detail))
    response.headers.update(exc.headers or {})
    return response


async def _unexpected(_: Request, exc: Exception) -> Response:
    log.exception("unexpected error")
    return problem(500, f"internal error: {type(exc).__name__}")


def not_serving(name: str) -> Problem:
    return Problem(503, fastpath.not_serving(name).args[0])


async def read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise Problem(413, f"request body of {length} bytes is over the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Problem(413, f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@router.get("/health")
async def health() -> Response:
    return json_response({"status": "ok"})


@router.get("/ready")
async def ready(svc: Service) -> Response:
    model = svc.model
    if model is None:
        raise not_serving(svc.name)
    return json_response({"status": "ready", "model_name": model.name, "model_version": model.version})


@router.get("/model")
async def model_info(svc: Service, _: Reader) -> Response:
    model = svc.model
    status = svc.follower.status
    body: dict[str, Any] = model.describe() if model else {"model_name": svc.name, "model_version": None}
    body.update(
        serving=model is not None,
        alias_version=status.alias_version,
        previous_version=svc.follower.previous.version if svc.follower.previous else None,
        standby_version=status.standby_version,
        reloads=status.reloads,
        failed_versions=status.failed_versions,
        last_swap=status.last_swap,
        events_connected=status.events_connected,
        last_error=status.last_error,
        drift=svc.drift_report(),
    )
    return json_response(body)


@router.post("/predict")
async def predict(request: Request, svc: Service, cfg: Settings, _: Reader) -> Response:
    """Body ``{"instances": [...], "probabilities": false}``: strings for text models, records for tabular.

    Normally answered by :class:`predictor.fastpath.FastPredict` before FastAPI sees it; this route is the
    same code behind FastAPI (documentation, and apps mounted without the middleware).
    """
    body = await read_body(request, cfg.max_body_bytes)
    try:
        return Response(await fastpath.predict(svc, cfg, body, request.scope), media_type="application/json")
    except fastpath.Reply as reply:
        return Response(reply.body, status_code=reply.status, media_type="application/json")


@router.post("/invocations")
async def invocations_(request: Request, svc: Service, cfg: Settings, _: Reader) -> Response:
    """MLflow's scoring protocol: dataframe_split, dataframe_records, instances, inputs; JSON or CSV.

    Normally answered by :class:`predictor.fastpath.FastPredict`; this route runs the same code.
    """
    body = await read_body(request, cfg.max_body_bytes)
    status, content = await invocations.handle(svc, cfg, body, request.headers.get("content-type", ""))
    return Response(content, status_code=status, media_type="application/json")


class Feedback(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=128)
    label: str | int | bool | None = None
    value: float | None = None
    index: int | None = Field(None, ge=0)


@router.post("/feedback")
async def feedback(body: Feedback, svc: Service, _: FeedbackGiver) -> Response:
    """Ground truth for an earlier prediction: ``{"request_id", "label"}`` or ``{"request_id", "value"}``."""
    model = svc.model
    if model is None:
        raise not_serving(svc.name)
    if (body.label is None) == (body.value is None):
        raise Problem(422, "send exactly one of 'label' (classification) or 'value' (regression)")
    try:
        answer = await svc.store.submit(body.request_id, body.label, body.value, body.index, model.is_classifier)
    except FeedbackError as exc:
        raise Problem(exc.status, exc.message) from None
    return json_response(answer)


def create_app(settings: PredictorSettings | None = None) -> FastAPI:
    """The predictor. Building it reads the settings and builds the (idle) service; the process is configured
    (:func:`configure_process`) and the service started by the lifespan."""
    settings = settings or get_settings()
    service = PredictorService(settings)
    authenticator = RemoteAuthenticator(settings.registry_url, settings.auth_cache_seconds)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        configure_process(settings)
        await service.start()
        log.info("predictor for %s started (events on %s, polling every %ss)", settings.model_name,
                 settings.model_events_channel, settings.poll_interval_seconds)
        try:
            yield
        finally:
            await service.stop()
            await authenticator.aclose()

    app = FastAPI(title="predictor", version="0.1.0", lifespan=lifespan,
                  description="Serves the production version of one registered model; follows the registry.")
    app.state.settings, app.state.service = settings, service
    instrument(app, "predictor")
    app.state.authenticator = authenticator
    app.state.auth_open_reads = settings.open_reads
    app.add_middleware(FastPredict, service=service, settings=settings, authenticator=authenticator)
    app.exception_handler(Problem)(_problem)
    app.exception_handler(RequestValidationError)(_invalid)
    app.exception_handler(StarletteHTTPException)(_http)
    app.exception_handler(Exception)(_unexpected)
    app.include_router(router)
    return app


app = create_app()
