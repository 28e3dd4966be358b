"""The skeleton every service's ``create_app`` builds on: one FastAPI app with the shared error handlers, the
request ids and metrics, and the same ``/health`` and ``/ready`` (with the service's name and version).

A service passes its lifespan (which builds its context and keeps it on ``app.state.ctx``) and a readiness
check: a function of the request that returns what is wrong (``{"database": "OperationalError"}``, empty when
ready) and any facts worth showing (``{"model_version": "3"}``). A plain function runs in a worker thread, so
it may block on I/O; a coroutine function runs on the event loop.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from mlops_common.errors import install_error_handlers
from mlops_common.observability import instrument

# (problems, facts): what keeps the service from being ready (empty when ready), and what it wants to show.
ReadyResult = tuple[dict[str, str], dict[str, Any]]
ReadyCheck = Callable[[Request], ReadyResult | Awaitable[ReadyResult]]
Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    service: str
    version: str


class Readiness(BaseModel):
    """Ready, or the reasons it is not (``problems``); services add their own facts (extra fields)."""

    model_config = ConfigDict(extra="allow")

    status: Literal["ready", "unavailable"]
    service: str
    version: str
    problems: dict[str, str] = {}
    # The problems as one sentence, in the shape of every other error answer.
    detail: str | None = None


def create_service_app(*, name: str, version: str, description: str, lifespan: Lifespan, ready: ReadyCheck,
                       metrics_namespace: str, max_body_size: int | None = None) -> FastAPI:
    extra: dict[str, Any] = {} if max_body_size is None else {"max_body_size": max_body_size}
    app = FastAPI(title=name, version=version, description=description, lifespan=lifespan, **extra)
    install_error_handlers(app)
    instrument(app, metrics_namespace)

    @app.get("/health", tags=["ops"], response_model=Health)
    async def health() -> Health:
        """The process is up (liveness)."""
        return Health(service=name, version=version)

    @app.get("/ready", tags=["ops"], response_model=Readiness,
             responses={503: {"model": Readiness, "description": "not ready, with the reasons"}})
    async def readiness(request: Request) -> Any:
        """The service can do its work: its dependencies answer (readiness)."""
        if inspect.iscoroutinefunction(ready):
            problems, facts = await ready(request)
        else:  # a plain function may block on I/O: off the event loop
            problems, facts = await run_in_threadpool(ready, request)  # type: ignore[misc]
        if problems:
            body = Readiness(status="unavailable", service=name, version=version, problems=problems,
                             detail="; ".join(f"{k}: {v}" for k, v in problems.items()), **facts)
            return JSONResponse(body.model_dump(mode="json", exclude_none=True), status_code=503)
        return Readiness(status="ready", service=name, version=version, **facts)

    return app
