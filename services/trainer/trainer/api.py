"""trainer-api: ``uvicorn trainer.api:app --port 8002``.

``app`` is built when first asked for (uvicorn's import does), not when this module is imported, so importing
the trainer reads no settings; tests build their own with :func:`create_app`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import redis
from fastapi import FastAPI, Request, Response
from prometheus_client import REGISTRY
from starlette.concurrency import run_in_threadpool

from mlops_common.app import ReadyResult, create_service_app
from mlops_common.errors import MAX_JSON_BODY_BYTES, error_response
from mlops_common.observability import configure_logging
from trainer import __version__
from trainer.context import TrainerContext, build_context
from trainer.metrics import RedisMetrics
from trainer.routes import alerts, datasets, jobs
from trainer.routes.datasets import MULTIPART_OVERHEAD
from trainer.settings import TrainerSettings, get_settings

log = logging.getLogger("trainer.api")
DESCRIPTION = "Enqueues and reports retrain jobs; stores content-addressed datasets."


def check_dependencies(ctx: TrainerContext) -> ReadyResult:
    """Ready when the job store (and the broker, when it is a Redis of its own) answers."""
    problems: dict[str, str] = {}
    try:
        ctx.store.ping()
    except redis.RedisError as exc:
        problems["job_store"] = f"Redis unreachable ({type(exc).__name__})"
    if ctx.broker_is_separate:
        try:
            ctx.broker.ping()
        except redis.RedisError as exc:
            problems["broker"] = f"Redis unreachable ({type(exc).__name__})"
    return problems, {"queue": ctx.settings.celery_queue}


async def ready(request: Request) -> ReadyResult:
    return await run_in_threadpool(check_dependencies, request.app.state.ctx)


def create_app(settings: TrainerSettings | None = None,
               build: Callable[[TrainerSettings], TrainerContext] = build_context) -> FastAPI:
    """The API. Building it only reads the settings; logging, MLflow's set-up, the context (``build``) and the
    job metrics' collector come when it starts (its lifespan)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.log_level, settings.log_format)
        settings.prepare_process()
        ctx = build(settings)
        app.state.ctx = ctx
        app.state.authenticator = ctx.authenticator
        # Job, queue and gate metrics, read from Redis at scrape time (what every worker recorded).
        collector = RedisMetrics(ctx.store, ctx.broker, [settings.celery_queue])
        try:
            REGISTRY.register(collector)
            registered = True
        except ValueError:  # another app of this process registered them already
            registered = False
        try:
            yield
        finally:
            if registered:
                REGISTRY.unregister(collector)
            await ctx.aclose()

    app = create_service_app(name="trainer-api", version=__version__, description=DESCRIPTION, lifespan=lifespan,
                             ready=ready, metrics_namespace="trainer", max_body_size=MAX_JSON_BODY_BYTES)
    app.state.auth_open_reads = settings.open_reads
    app.include_router(jobs.router)
    app.include_router(datasets.build_router(settings))
    app.include_router(alerts.router)

    @app.middleware("http")
    async def refuse_oversized_uploads(request: Request, call_next: Callable[[Request], Awaitable[Response]]
                                       ) -> Response:
        """413 before the body is read when an upload announces more than MAX_UPLOAD_BYTES (+ multipart
        overhead)."""
        length = request.headers.get("content-length", "")
        if request.method == "POST" and request.url.path == "/datasets" and length.isdigit() \
                and int(length) > settings.max_upload_bytes + MULTIPART_OVERHEAD:
            return error_response(413, f"the upload is larger than the limit of {settings.max_upload_bytes} bytes")
        return await call_next(request)

    def redis_down(_: Request, exc: Exception) -> Response:
        return error_response(503, f"the job store (Redis) is unreachable: {exc}")

    app.add_exception_handler(redis.RedisError, redis_down)
    return app


_app: FastAPI | None = None


def __getattr__(name: str) -> FastAPI:
    global _app
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _app is None:
        _app = create_app()
    return _app
