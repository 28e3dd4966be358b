"""registry-proxy app: ``uvicorn registry_proxy.main:app --port 8001``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import text

from mlops_common.app import Lifespan, ReadyResult, create_service_app
from mlops_common.errors import MAX_JSON_BODY_BYTES, ServiceError
from mlops_common.observability import configure_logging
from registry_proxy import __version__, migrations
from registry_proxy.context import AppContext
from registry_proxy.db import make_engine, make_sessionmaker
from registry_proxy.errors import install_handlers
from registry_proxy.events import EventPublisher
from registry_proxy.identity import Identity, LocalAuthenticator
from registry_proxy.metrics import STATE
from registry_proxy.mlflow_registry import Registry, configure_mlflow_http
from registry_proxy.notifications import Notifier
from registry_proxy.rollouts import CanaryLoop
from registry_proxy.routes import audit, decisions, models, notifications, policies, principals, rollouts, ui
from registry_proxy.settings import RegistrySettings, get_settings

log = logging.getLogger("registry_proxy")

NAME = "registry-proxy"
DESCRIPTION = "The only door to MLflow's registry aliases: gate, approvals, rollback, audit, DORA."


def build_context(settings: RegistrySettings) -> AppContext:
    """Connects to the database (migrating it) and MLflow, and makes sure the stack's principals exist."""
    settings.apply_mlflow_credentials()
    configure_mlflow_http(settings.registry_mlflow_timeout_seconds, settings.registry_mlflow_max_retries)
    engine = make_engine(settings.registry_database_url)
    migrations.upgrade(engine)
    sessions = make_sessionmaker(engine)
    Identity(sessions).bootstrap(settings)
    return AppContext(
        settings=settings,
        engine=engine,
        sessions=sessions,
        registry=Registry(settings.mlflow_tracking_uri),
        publisher=EventPublisher(settings.redis_url, settings.model_events_channel),
        notifier=Notifier(settings, sessions),
    )


def lifespan_of(settings: RegistrySettings | None) -> Lifespan:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        s = settings or get_settings()
        configure_logging(s.log_level, s.log_format)
        logging.getLogger("httpx").setLevel(logging.WARNING)
        ctx = build_context(s)
        app.state.ctx = ctx
        app.state.authenticator = LocalAuthenticator(ctx.sessions)
        app.state.auth_open_reads = s.open_reads
        STATE.configure(ctx.sessions, s.dora_window_days)
        resumed = ctx.notifier.resume_stale()
        if resumed:
            log.info("re-sending %d notifications left pending by a previous process", resumed)
        canaries = CanaryLoop(ctx).start()
        log.info("registry-proxy ready: mlflow=%s channel=%s webhook=%s", s.mlflow_tracking_uri,
                 s.model_events_channel, "on" if s.notify_webhook_url else "off")
        try:
            yield
        finally:
            canaries.stop()
            ctx.notifier.shutdown()
            ctx.publisher.close()
            ctx.engine.dispose()

    return lifespan


def problems_of(ctx: AppContext) -> dict[str, str]:
    """What keeps the service from working: its database or MLflow not answering."""
    problems: dict[str, str] = {}
    try:
        with ctx.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any database failure is 'not ready'
        problems["database"] = type(exc).__name__
    try:
        ctx.registry.ping()
    except ServiceError as exc:
        problems["mlflow"] = exc.detail
    return problems


async def readiness(request: Request) -> ReadyResult:
    return await run_in_threadpool(problems_of, request.app.state.ctx), {}


def create_app(settings: RegistrySettings | None = None) -> FastAPI:
    """The app; ``settings`` default to the environment's, read when the app starts."""
    app = create_service_app(name=NAME, version=__version__, description=DESCRIPTION, lifespan=lifespan_of(settings),
                             ready=readiness, metrics_namespace="registry", max_body_size=MAX_JSON_BODY_BYTES)
    install_handlers(app)
    for module in (principals, models, rollouts, policies, decisions, audit, notifications, ui):
        app.include_router(module.router)
    return app


app = create_app()
