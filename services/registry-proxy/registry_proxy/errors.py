"""registry-proxy's refusals are the common ones (:mod:`mlops_common.errors`); what is its own is how database
failures are answered: a conflicting write is a 409, a value Postgres cannot store (NUL in text, a number out
of range, a text too long) a 422, a database that is gone a 503. Always ``{"detail": ...}``, never a stack
trace."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import Response
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError, StatementError

from mlops_common.errors import (
    BadRequest,
    Conflict,
    NotFound,
    ServiceError,
    Unavailable,
    Unprocessable,
    error_response,
)

__all__ = ["BadRequest", "Conflict", "NotFound", "RegistryError", "ServiceError", "Unavailable", "Unprocessable",
           "install_handlers"]

log = logging.getLogger(__name__)

# Kept for callers that knew registry-proxy's own base class: it is the common one now.
RegistryError = ServiceError

NUL_IN_TEXT = "text fields cannot contain NUL (0x00) characters"


def _nul_in_text(exc: Exception) -> bool:
    """psycopg2 refuses text holding NUL characters (SQLAlchemy may wrap its ValueError)."""
    return "cannot contain NUL (0x00)" in str(getattr(exc, "orig", None) or exc)


async def _integrity_error(request: Request, exc: Exception) -> Response:
    log.warning("conflicting write on %s %s: %s", request.method, request.url.path, exc)
    return error_response(409, "a concurrent request changed the same record; retry")


async def _unstorable(request: Request, exc: Exception) -> Response:
    if _nul_in_text(exc):
        return error_response(422, NUL_IN_TEXT)
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, f"internal error: {type(exc).__name__}")


async def _unfit_value(request: Request, exc: Exception) -> Response:
    """SQLSTATE class 22 (data exception): the request's values, not the database, are at fault."""
    if _nul_in_text(exc):
        return error_response(422, NUL_IN_TEXT)
    reason = str(getattr(exc, "orig", None) or exc).splitlines()[0][:200]
    log.info("value refused by the database on %s %s: %s", request.method, request.url.path, reason)
    return error_response(422, f"a value does not fit the registry database: {reason}")


async def _database_error(request: Request, exc: Exception) -> Response:
    if _nul_in_text(exc):  # the request's fault, not the database's
        return error_response(422, NUL_IN_TEXT)
    log.warning("database error on %s %s: %s", request.method, request.url.path, exc)
    return error_response(503, "registry database unavailable, retry later")


def install_handlers(app: FastAPI) -> None:
    """The answers to database failures (the common handlers come with ``create_service_app``)."""
    app.add_exception_handler(IntegrityError, _integrity_error)
    app.add_exception_handler(DataError, _unfit_value)
    app.add_exception_handler(ValueError, _unstorable)
    app.add_exception_handler(StatementError, _unstorable)
    app.add_exception_handler(OperationalError, _database_error)
    app.add_exception_handler(DBAPIError, _database_error)
