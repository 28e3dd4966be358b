"""Client for the mlops stack's HTTP APIs (predictor, trainer-api, registry-proxy), sync and async.

Depends only on httpx and pydantic; the ``mlops`` command (:mod:`mlops_client.cli`) adds Typer and Rich.
"""

from mlops_client._core import token_from_env
from mlops_client.client import AsyncClient, Client
from mlops_client.errors import (
    AuthenticationError,
    BadRequestError,
    ConflictError,
    JobFailedError,
    JobTimeoutError,
    MlopsError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RefusedError,
    ServerError,
    UnavailableError,
    ValidationError,
)

__all__ = [
    "AsyncClient",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "ConflictError",
    "JobFailedError",
    "JobTimeoutError",
    "MlopsError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RefusedError",
    "ServerError",
    "UnavailableError",
    "ValidationError",
    "token_from_env",
]
