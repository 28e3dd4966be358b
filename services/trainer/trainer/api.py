"""trainer-api: ``uvicorn trainer.api:app --port 8002``."""

from __future__ import annotations

import logging

import redis
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import REGISTRY

from mlops_common.auth import RemoteAuthenticator
from mlops_common.errors import MAX_JSON_BODY_BYTES, install_validation_handler
from mlops_common.observability import configure_logging, instrument
from trainer import __version__
from trainer.deps import job_store
from trainer.metrics import RedisMetrics
from trainer.routes import alerts, datasets, jobs
from trainer.settings import get_settings
from trainer.submission import Rejected

settings = get_settings()
configure_logging(settings.log_level)
log = logging.getLogger("trainer.api")

settings.apply_mlflow_credentials()
app = FastAPI(title="trainer-api", version=__version__, max_body_size=MAX_JSON_BODY_BYTES,
              description="Enqueues and reports retrain jobs; stores content-addressed datasets.")
app.state.authenticator = RemoteAuthenticator(settings.registry_url, settings.auth_cache_seconds)
app.state.auth_open_reads = settings.open_reads
app.include_router(jobs.router)
app.include_router(datasets.router)
app.include_router(alerts.router)
instrument(app, "trainer")
install_validation_handler(app)


def _broker_redis() -> redis.Redis:
    url = settings.celery_broker_url
    if url.startswith(("redis://", "rediss://")):
        return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    return job_store().r


_collector = RedisMetrics(job_store().r, _broker_redis(), [settings.celery_queue], job_store().RUNNING)
try:
    REGISTRY.register(_collector)
except ValueError:  # re-import in the same process (tests, reload)
    pass


@app.middleware("http")
async def refuse_oversized_uploads(request: Request, call_next):
    """413 before the body is read when an upload announces more than MAX_UPLOAD_BYTES (+ multipart overhead)."""
    length = request.headers.get("content-length", "")
    if request.method == "POST" and request.url.path == "/datasets" and length.isdigit() \
            and int(length) > settings.max_upload_bytes + 64 * 1024:
        return JSONResponse({"detail": f"the upload is larger than the limit of {settings.max_upload_bytes} bytes"},
                            status_code=413)
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
