"""registry-proxy app: ``uvicorn registry_proxy.main:app --port 8001``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import text

from mlops_common.errors import MAX_JSON_BODY_BYTES, install_validation_handler
from mlops_common.observability import configure_logging, instrument
from registry_proxy import migrations
from registry_proxy.context import AppContext, Ctx
from registry_proxy.db import make_engine, make_sessionmaker
from registry_proxy.errors import RegistryError, install_handlers
from registry_proxy.events import EventPublisher
from registry_proxy.identity import Identity, LocalAuthenticator
from registry_proxy.metrics import STATE
from registry_proxy.mlflow_registry import Registry, configure_mlflow_http
from registry_proxy.notifications import Notifier
from registry_proxy.routes import audit, decisions, models, notifications, policies, principals, ui
from registry_proxy.settings import get_settings

log = logging.getLogger("registry_proxy")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    settings.apply_mlflow_credentials()
    configure_mlflow_http(settings.registry_mlflow_timeout_seconds, settings.registry_mlflow_max_retries)
    engine = make_engine(settings.registry_database_url)
    migrations.upgrade(engine)
    sessions = make_sessionmaker(engine)
    Identity(sessions).bootstrap(settings)
    app.state.authenticator = LocalAuthenticator(sessions)
    app.state.auth_open_reads = settings.open_reads
    ctx = AppContext(
        settings=settings,
        engine=engine,
        sessions=sessions,
        registry=Registry(settings.mlflow_tracking_uri),
        publisher=EventPublisher(settings.redis_url, settings.model_events_channel),
        notifier=Notifier(settings, sessions),
    )
    app.state.ctx = ctx
    STATE.configure(sessions, settings.dora_window_days)
    resumed = ctx.notifier.resume_stale()
    if resumed:
        log.info("re-sending %d notifications left pending by a previous process", resumed)
    log.info("registry-proxy ready: mlflow=%s channel=%s webhook=%s", settings.mlflow_tracking_uri,
             settings.model_events_channel, "on" if settings.notify_webhook_url else "off")
    try:
        yield
    finally:
        ctx.notifier.shutdown()
        ctx.publisher.close()
        engine.dispose()


app = FastAPI(title="registry-proxy", version="0.1.0", lifespan=lifespan, max_body_size=MAX_JSON_BODY_BYTES,
              description="The only door to MLflow's registry aliases: gate, approvals, rollback, audit, DORA.")
install_handlers(app)
install_validation_handler(app)
instrument(app, "registry")
app.include_router(principals.router)
app.include_router(models.router)
app.include_router(policies.router)
app.include_router(decisions.router)
app.include_router(audit.router)
app.include_router(notifications.router)
app.include_router(ui.router)


@app.get("/health", tags=["ops"])
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/ready", tags=["ops"], response_model=None)
def ready(ctx: Ctx) -> dict[str, Any] | JSONResponse:
    problems: dict[str, str] = {}
    try:
        with ctx.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any database failure is 'not ready'
        problems["database"] = type(exc).__name__
    try:
        ctx.registry.ping()
    except RegistryError as exc:
        problems["mlflow"] = exc.detail
    if problems:
        return JSONResponse({"status": "unavailable", "problems": problems}, status_code=503)
    return {"status": "ready"}
