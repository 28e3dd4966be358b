"""One logging set-up and one metrics set-up for every process (FastAPI services and Celery workers).

Logs are JSON lines on stdout (python-json-logger), one object per record with ``time``, ``level``, ``logger``
and ``message``, plus whichever of ``request_id``, ``job_id``, ``model`` and ``version`` the code that logged
was working for: they live in context variables (:func:`log_context`), set per request by
:class:`RequestIdMiddleware` and per job by the trainer's tasks, so a line can be traced back to the request
or job it served. ``LOG_FORMAT=text`` gives plain lines for a terminal.
"""

from __future__ import annotations

import logging
import re
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, Summary
from prometheus_fastapi_instrumentator import Instrumentator
from prometheus_fastapi_instrumentator.metrics import Info
from pythonjsonlogger.json import JsonFormatter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The buckets of the instrumentator's default metrics (``Instrumentator.instrument``'s defaults).
LATENCY_HIGHR_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 7.5, 10,
                         30, 60, float("inf"))
LATENCY_LOWR_BUCKETS = (0.1, 0.5, 1, float("inf"))

LOG_FIELDS = ("request_id", "job_id", "model", "version")
_context: dict[str, ContextVar[str | None]] = {name: ContextVar(f"mlops_log_{name}", default=None)
                                               for name in LOG_FIELDS}
REQUEST_ID_HEADER = "x-request-id"
# A client's own request id is kept when it is short and plain; anything else gets a fresh one.
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def bind_log_context(**fields: Any) -> None:
    """Set context fields (``request_id``, ``job_id``, ``model``, ``version``) for the rest of this task or
    thread's context; ``None`` clears one."""
    for name, value in fields.items():
        _context[name].set(None if value is None else str(value))


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Context fields for the lines logged inside the ``with`` block."""
    tokens = [(_context[name], _context[name].set(None if value is None else str(value)))
              for name, value in fields.items()]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def current_request_id() -> str | None:
    return _context["request_id"].get()


class _ContextFields(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _context.items():
            value = var.get()
            if value is not None and not hasattr(record, name):
                setattr(record, name, value)
        return True


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """The root logger of this process: JSON lines (``fmt="json"``) or plain text on stdout, with the context
    fields. Safe to call again (it replaces the handler)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(_ContextFields())
    if fmt == "text":
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    else:
        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                                           rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                                           json_ensure_ascii=False))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


class RequestIdMiddleware:
    """Gives every HTTP request an id: the client's ``X-Request-ID`` when it sent a plain one, else a new one.
    It is bound for the request's log lines and echoed in the response's ``X-Request-ID`` header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        header = (REQUEST_ID_HEADER.encode(), request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        token = _context["request_id"].set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _context["request_id"].reset(token)


def request_id_of(scope: Scope) -> str:
    """The request id of an ASGI request: the client's plain ``X-Request-ID``, or a new uuid4 hex."""
    for key, value in scope.get("headers", ()):
        if key == b"x-request-id":
            text: str = value.decode("latin-1")
            if _CLIENT_REQUEST_ID.match(text):
                return text
            break
    return uuid.uuid4().hex


@dataclass(frozen=True)
class HttpMetrics:
    """A service's HTTP metric families: the names, help texts, labels and buckets of the instrumentator's
    default set (``prometheus_fastapi_instrumentator.metrics.default``), created here so that code outside its
    middleware (the predictor's fast path) records into the same families through their public API."""

    requests: Counter  # method, status, handler
    request_size: Summary  # handler
    response_size: Summary  # handler
    latency_highr: Histogram  # no labels
    latency: Histogram  # method, handler

    @classmethod
    def create(cls, namespace: str, registry: CollectorRegistry) -> HttpMetrics:
        return cls(
            requests=Counter("http_requests_total", "Total number of requests by method, status and handler.",
                             ("method", "status", "handler"), namespace=namespace, registry=registry),
            request_size=Summary("http_request_size_bytes",
                                 "Content length of incoming requests by handler. Only value of header is "
                                 "respected. Otherwise ignored. No percentile calculated. ",
                                 ("handler",), namespace=namespace, registry=registry),
            response_size=Summary("http_response_size_bytes",
                                  "Content length of outgoing responses by handler. Only value of header is "
                                  "respected. Otherwise ignored. No percentile calculated. ",
                                  ("handler",), namespace=namespace, registry=registry),
            latency_highr=Histogram("http_request_duration_highr_seconds",
                                    "Latency with many buckets but no API specific labels. Made for more accurate "
                                    "percentile calculations. ",
                                    buckets=LATENCY_HIGHR_BUCKETS, namespace=namespace, registry=registry),
            latency=Histogram("http_request_duration_seconds",
                              "Latency with only few buckets by handler. Made to be only used if aggregation by "
                              "handler is important. ",
                              ("method", "handler"), buckets=LATENCY_LOWR_BUCKETS, namespace=namespace,
                              registry=registry),
        )

    def observe(self, info: Info) -> None:
        """One request seen by the instrumentator's middleware (what its default instrumentation records)."""
        handler, method, status = info.modified_handler, info.method, info.modified_status
        self.requests.labels(method, status, handler).inc()
        self.request_size.labels(handler).observe(int(info.request.headers.get("Content-Length", 0)))
        response = info.response
        size = int(response.headers.get("Content-Length", 0)) if response and hasattr(response, "headers") else 0
        self.response_size.labels(handler).observe(size)
        self.latency_highr.observe(info.modified_duration)
        self.latency.labels(method, handler).observe(info.modified_duration)


_http_metrics: dict[tuple[int, str], HttpMetrics] = {}


def http_metrics(namespace: str, registry: CollectorRegistry = REGISTRY) -> HttpMetrics:
    """The HTTP metric families of ``namespace`` (``<namespace>_http_...``), created on first use."""
    key = (id(registry), namespace)
    found = _http_metrics.get(key)
    if found is None:
        found = _http_metrics[key] = HttpMetrics.create(namespace, registry)
    return found


def instrument(app: FastAPI, namespace: str) -> Instrumentator:
    """Expose ``/metrics`` with HTTP metrics under the service's prefix (``<namespace>_http_...``), and give
    every request an id (:class:`RequestIdMiddleware`)."""
    instrumentator = Instrumentator(
        should_group_status_codes=False,
        excluded_handlers=["/metrics", "/health"],
    )
    instrumentator.add(http_metrics(namespace).observe)
    instrumentator.instrument(app, metric_namespace=namespace).expose(app, include_in_schema=False)
    app.add_middleware(RequestIdMiddleware)
    return instrumentator
