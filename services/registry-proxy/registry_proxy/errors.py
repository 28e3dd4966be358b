"""Domain errors and their HTTP answers: always a 4xx/503 with a reason, never a stack trace."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, StatementError

log = logging.getLogger(__name__)


class RegistryError(Exception):
    status_code = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(RegistryError):
    status_code = 404


class Conflict(RegistryError):
    status_code = 409


class Unavailable(RegistryError):
    status_code = 503


def _nul_in_text(exc: Exception) -> bool:
    """psycopg2 refuses text holding NUL characters (SQLAlchemy may wrap its ValueError)."""
    return "cannot contain NUL (0x00)" in str(getattr(exc, "orig", None) or exc)


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(RegistryError)
    async def _registry_error(request: Request, exc: RegistryError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    @app.exception_handler(IntegrityError)
    async def _integrity_error(request: Request, exc: IntegrityError) -> JSONResponse:
        log.warning("conflicting write on %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": "a concurrent request changed the same record; retry"}, status_code=409)

    @app.exception_handler(ValueError)
    @app.exception_handler(StatementError)
    async def _unstorable(request: Request, exc: Exception) -> JSONResponse:
        if _nul_in_text(exc):
            return JSONResponse({"detail": "text fields cannot contain NUL (0x00) characters"}, status_code=422)
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)

    @app.exception_handler(OperationalError)
    @app.exception_handler(DBAPIError)
    async def _database_error(request: Request, exc: DBAPIError) -> JSONResponse:
        if _nul_in_text(exc):  # the request's fault, not the database's
            return JSONResponse({"detail": "text fields cannot contain NUL (0x00) characters"}, status_code=422)
        log.warning("database error on %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": "registry database unavailable, retry later"}, status_code=503)
