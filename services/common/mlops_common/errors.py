"""Error answers every service shares: a 422 for an invalid request that can always be rendered, whatever
the client sent (NaN and infinities, lone surrogates, megabytes of text), in FastAPI's usual shape."""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

MAX_ECHO_CHARS = 200
# Bodies of the JSON APIs (registry-proxy, trainer-api) are small; anything larger is refused with a 413
# before it is read into memory (uploads have their own, larger, limit).
MAX_JSON_BODY_BYTES = 2 * 1024 * 1024


def safe(value: Any) -> Any:
    """``value`` made JSON-safe: non-finite floats as strings, unpaired surrogates escaped, long text cut."""
    if isinstance(value, float) and not math.isfinite(value):
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


async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [{key: safe(jsonable_encoder(err.get(key)))
               for key in ("type", "loc", "msg", "input") if key in err} for err in exc.errors()]
    return JSONResponse({"detail": errors}, status_code=422)


def install_validation_handler(app: FastAPI) -> None:
    """422 answers for invalid requests that never fail to render (FastAPI's default turns NaN or a lone
    surrogate in the request into a 500 while echoing it back)."""
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
