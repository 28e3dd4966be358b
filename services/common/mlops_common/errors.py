"""One error type and one error body for every service.

Every refusal is a :class:`ServiceError` (or one of its subclasses) and every service answers it, a request
that fails validation, and an unexpected exception the same way: ``{"detail": ...}`` as JSON, FastAPI's own
shape, with ``detail`` a sentence (or, for a 422 from request validation, FastAPI's list of field errors).
Non-finite floats, lone surrogates and megabytes of echoed input are made safe first, so an error answer
never fails to render. The predictor's fast path (outside FastAPI) renders the same body with
:func:`error_body`. MLflow's scoring protocol (``/invocations``) keeps MLflow's own error shape.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import orjson
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

MAX_ECHO_CHARS = 200
# Bodies of the JSON APIs (registry-proxy, trainer-api) are small; anything larger is refused with a 413
# before it is read into memory (uploads have their own, larger, limit).
MAX_JSON_BODY_BYTES = 2 * 1024 * 1024


class ServiceError(Exception):
    """A refusal with its HTTP status and a reason the caller can act on. ``extra`` fields join the body;
    ``headers`` (e.g. ``Retry-After``) join the response."""

    status_code: ClassVar[int] = 400

    def __init__(self, detail: str, *, status_code: int | None = None, headers: Mapping[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        if status_code is not None:
            self.status_code = status_code  # type: ignore[misc]
        self.headers = dict(headers or {})
        self.extra = extra

    @property
    def status(self) -> int:
        return self.status_code

    def body(self) -> bytes:
        return error_body(self.detail, **self.extra)


class BadRequest(ServiceError):
    status_code = 400


class Unauthorized(ServiceError):
    status_code = 401


class Forbidden(ServiceError):
    status_code = 403


class NotFound(ServiceError):
    status_code = 404


class Conflict(ServiceError):
    status_code = 409


class TooLarge(ServiceError):
    status_code = 413


class Unprocessable(ServiceError):
    status_code = 422


class Unavailable(ServiceError):
    status_code = 503


def safe(value: Any) -> Any:
    """``value`` made JSON-safe: non-finite floats and integers past 64 bits as strings, unpaired surrogates
    escaped, long text cut."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, int) and not -(2**63) <= value < 2**64:  # past what JSON encoders take as a number
        return str(value)
    if isinstance(value, str):
        text = value if len(value) <= MAX_ECHO_CHARS else value[:MAX_ECHO_CHARS] + "…"
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, bytes):
        return safe(value.decode("utf-8", "replace"))
    if isinstance(value, dict):
        return {safe(str(k)): safe(v) for k, v in list(value.items())[:50]}
    if isinstance(value, (list, tuple)):
        return [safe(v) for v in list(value)[:50]]
    return value


def error_body(detail: Any, **extra: Any) -> bytes:
    """The error body every service answers with: ``{"detail": ..., **extra}`` as JSON bytes. A sentence the
    service wrote is kept whole; echoed input (a validation error's list, extra fields) is cut and made safe."""
    text = detail.encode("utf-8", "backslashreplace").decode("utf-8") if isinstance(detail, str) else safe(detail)
    return orjson.dumps({"detail": text, **{k: safe(v) for k, v in extra.items()}})


def error_response(status: int, detail: Any, headers: Mapping[str, str] | None = None, **extra: Any) -> Response:
    return Response(error_body(detail, **extra), status_code=status, headers=dict(headers or {}),
                    media_type="application/json")


async def _service_error(_: Request, exc: ServiceError) -> Response:
    return error_response(exc.status_code, exc.detail, exc.headers, **exc.extra)


async def validation_error(_: Request, exc: RequestValidationError) -> Response:
    errors = [{key: jsonable_encoder(err.get(key)) for key in ("type", "loc", "msg", "input") if key in err}
              for err in exc.errors()]
    return error_response(422, errors)


async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
    return error_response(exc.status_code, str(exc.detail), exc.headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, f"internal error: {type(exc).__name__}")


def install_error_handlers(app: FastAPI) -> None:
    """The handlers that give every refusal the one body shape: :class:`ServiceError`, request validation
    (422 answers that never fail to render: FastAPI's default turns NaN or a lone surrogate in the request into
    a 500 while echoing it back), Starlette's HTTP errors (404 for an unknown route, 405) and, last, anything
    unexpected (a 500 naming only the exception's type; the stack trace goes to the log)."""
    app.add_exception_handler(ServiceError, _service_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)


def install_validation_handler(app: FastAPI) -> None:
    """Kept for callers that want only the 422 handler (see :func:`install_error_handlers`)."""
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
