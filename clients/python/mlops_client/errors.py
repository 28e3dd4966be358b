"""What the client raises: one :class:`MlopsError` family, each carrying the HTTP status and the server's reason.

The services refuse with ``{"detail": ...}`` (the predictor's OIP v2 routes with ``{"error": ...}``); the
reason is kept as ``detail`` (a string, or the list a validation error names its fields in) and rendered in
the message.
"""

from __future__ import annotations

from typing import Any


class MlopsError(Exception):
    """Any failure of a call. ``status`` is the HTTP status (``None`` when no answer came), ``detail`` the
    server's reason, ``url`` what was called, ``headers`` the answer's (names in lower case)."""

    def __init__(self, message: str, *, status: int | None = None, detail: Any = None, url: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail if detail is not None else message
        self.url = url
        self.headers = headers or {}

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class RefusedError(MlopsError):
    """The server refused the call (a 4xx): the request, the token or the state of things is at fault."""


class BadRequestError(RefusedError):
    """400: a body the server cannot read."""


class AuthenticationError(RefusedError):
    """401: no token, or one the stack does not know (expired, revoked)."""


class PermissionDeniedError(RefusedError):
    """403: the token's role may not do this."""


class NotFoundError(RefusedError):
    """404: no such model, version, job, dataset, decision or principal."""


class ConflictError(RefusedError):
    """409: the state forbids it (feedback already recorded, a canary already under way...)."""


class PayloadTooLargeError(RefusedError):
    """413: the body is over the server's limit."""


class ValidationError(RefusedError):
    """422: a field does not fit (the detail names it)."""


class ServerError(MlopsError):
    """A 5xx other than 503: the server failed."""


class UnavailableError(MlopsError):
    """503, a connection that failed or a timeout, after the retries: try again later."""


class JobFailedError(MlopsError):
    """A retrain job ended as ``failed``; ``job`` is its final state."""

    def __init__(self, job: Any) -> None:
        super().__init__(f"job {job.job_id} failed: {job.error}", detail=job.error)
        self.job = job


class JobTimeoutError(UnavailableError):
    """A job did not end within the time given to :meth:`~mlops_client.Client.wait_for_job`; ``job`` is its
    last state."""

    def __init__(self, job: Any, timeout: float) -> None:
        super().__init__(f"job {job.job_id} did not end within {timeout:g}s ({job.status}: {job.stage})")
        self.job = job


BY_STATUS: dict[int, type[MlopsError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: ValidationError,
    503: UnavailableError,
}


def error_class(status: int) -> type[MlopsError]:
    if status in BY_STATUS:
        return BY_STATUS[status]
    return RefusedError if 400 <= status < 500 else ServerError if status >= 500 else MlopsError
