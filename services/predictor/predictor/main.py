"""predictor: serves ``models:/<MODEL_NAME>@production`` and follows the alias without restarts.

``uvicorn predictor.main:app``. Building the app only reads the settings; the lifespan configures the process,
builds the context (:class:`~predictor.context.PredictorContext`, on ``app.state.ctx``) and starts the service.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import sklearn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError

from mlops_common.app import ReadyResult, create_service_app
from mlops_common.auth import RemoteAuthenticator
from mlops_common.observability import configure_logging
from predictor import __version__
from predictor.catalog import ModelCatalog
from predictor.context import PredictorContext
from predictor.deps import get_context
from predictor.errors import invalid_request
from predictor.fastpath import FastPredict
from predictor.loader import ModelLoader
from predictor.routes import routers, v2
from predictor.service import PredictorService
from predictor.settings import PredictorSettings, get_settings

log = logging.getLogger("predictor")

ServiceFactory = Callable[[PredictorSettings], PredictorService]


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


def ready(request: Request) -> ReadyResult:
    ctx = get_context(request)
    problems, facts = ctx.service.readiness()
    if len(ctx.catalog.services) > 1:
        facts["models"] = {s["model_name"]: s["model_version"] for s in ctx.catalog.summary()}
    return problems, facts


def shared_loader(settings: PredictorSettings) -> ServiceFactory:
    """Services that load their versions through one loader process."""
    loader = ModelLoader(settings)
    return lambda cfg: PredictorService(cfg, loader=loader)


def create_app(settings: PredictorSettings | None = None, *,
               service_factory: ServiceFactory | None = None) -> FastAPI:
    """The predictor. ``service_factory`` makes the service of each served model (the default follows MLflow's
    registry)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_process(settings)
        catalog = ModelCatalog(settings, service_factory or shared_loader(settings))
        ctx = PredictorContext(settings=settings, service=catalog.default, catalog=catalog,
                               authenticator=RemoteAuthenticator(settings.registry_url, settings.auth_cache_seconds))
        app.state.authenticator = ctx.authenticator
        app.state.ctx = ctx
        await catalog.start()
        log.info("predictor for %s started (events on %s, polling every %ss)", ", ".join(catalog.services),
                 settings.model_events_channel, settings.poll_interval_seconds)
        try:
            yield
        finally:
            del app.state.ctx
            await catalog.stop()
            await ctx.authenticator.aclose()

    app = create_service_app(
        name="predictor", version=__version__, lifespan=lifespan, ready=ready, metrics_namespace="predictor",
        description="Serves the production version of one registered model; follows the registry.")
    app.add_exception_handler(RequestValidationError, invalid_request)  # type: ignore[arg-type]
    app.state.auth_open_reads = settings.open_reads
    for router in routers:
        app.include_router(router)
    app.include_router(v2.router)
    # Added last, so outermost: /predict and /invocations are answered before any other middleware.
    app.add_middleware(FastPredict, state=app.state)
    return app


app = create_app()
