"""trainer-api: ``uvicorn trainer.api:app --port 8002``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import redis
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import REGISTRY

from mlops_common.auth import RemoteAuthenticator
from mlops_common.errors import MAX_JSON_BODY_BYTES, install_validation_handler
from mlops_common.observability import configure_logging, instrument
from trainer import __version__
from trainer.deps import job_store
from trainer.metrics import RedisMetrics
from trainer.routes import alerts, datasets, jobs
from trainer.settings import TrainerSettings, get_settings
from trainer.submission import Rejected

log = logging.getLogger("trainer.api")


def _broker_redis(settings: TrainerSettings) -> redis.Redis:
    url = settings.celery_broker_url
    if url.startswith(("redis://", "rediss://")):
        return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    return job_store().r


def create_app(settings: TrainerSettings | None = None) -> FastAPI:
    """The API. Building it only reads the settings (and defines its HTTP metric families); logging, MLflow
    credentials and the job metrics' collector are set up when it starts (its lifespan)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.log_level, settings.log_format)
        settings.apply_mlflow_credentials()
        # Job, queue and gate metrics, read from Redis at scrape time (what every worker recorded).
        collector = RedisMetrics(job_store().r, _broker_redis(settings), [settings.celery_queue], job_store().RUNNING)
        try:
            REGISTRY.register(collector)
        except ValueError:  # another app of this process registered them already
            yield
            return
        try:
            yield
        finally:
            REGISTRY.unregister(collector)

    app = FastAPI(title="trainer-api", version=__version__, max_body_size=MAX_JSON_BODY_BYTES, lifespan=lifespan,
                  description="Enqueues and reports retrain jobs; stores content-addressed datasets.")
    app.state.authenticator = RemoteAuthenticator(settings.registry_url, settings.auth_cache_seconds)
    app.state.auth_open_reads = settings.open_reads
    app.include_router(jobs.router)
    app.include_router(datasets.build_router(settings))
    app.include_router(alerts.router)
    instrument(app, "trainer")
    install_validation_handler(app)

    @app.middleware("http")
    async def refuse_oversized_uploads(request: Request, call_next: Callable[[Request], Awaitable[Response]]
                                       ) -> Response:
        """413 before the body is read when an upload announces more than MAX_UPLOAD_BYTES (+ multipart
        overhead)."""
        length = request.headers.get("content-length", "")
        if request.method == "POST" and request.url.path == "/datasets" and length.isdigit() \
                and int(length) > settings.max_upload_bytes + 64 * 1024:
            return JSONResponse({"detail": f"the upload is larger than the limit of {settings.max_upload_bytes} "
                                           "bytes"}, status_code=413)
        return await call_next(request)

    @app.exception_handler(Rejected)
    def rejected(_: Request, exc: Rejected) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(redis.RedisError)
    def redis_down(_: Request, exc: redis.RedisError) -> JSONResponse:
        return JSONResponse({"detail": f"the job store (Redis) is unreachable: {exc}"}, status_code=503)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "service": "trainer-api", "version": __version__}

    return app


app = create_app()
