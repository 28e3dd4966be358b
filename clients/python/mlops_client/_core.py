"""What the sync and async clients share: configuration, the description of each call, retries, refusals."""

from __future__ import annotations

import email.utils
import json
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Generic, Literal, TypeVar

import httpx
from pydantic import TypeAdapter

from mlops_client.errors import MlopsError, UnavailableError, error_class

T = TypeVar("T")
Service = Literal["predictor", "trainer", "registry"]

DEFAULT_URLS: dict[Service, str] = {
    "predictor": "http://127.0.0.1:8000",
    "registry": "http://127.0.0.1:8001",
    "trainer": "http://127.0.0.1:8002",
}
URL_VARIABLES: dict[Service, str] = {
    "predictor": "MLOPS_PREDICTOR_URL",
    "registry": "MLOPS_REGISTRY_URL",
    "trainer": "MLOPS_TRAINER_URL",
}
SERVICE_NAMES: dict[Service, str] = {"predictor": "predictor", "registry": "registry-proxy", "trainer": "trainer-api"}
TOKEN_VARIABLES = ("MLOPS_TOKEN", "REGISTRY_ADMIN_TOKEN")
RETRY_STATUSES = frozenset({503})
# Connection failures worth another try: nothing was answered (a read timeout only for idempotent calls).
RETRY_ERRORS = (httpx.TransportError,)

UploadProgress = Callable[[int, int], None]
"""Called as bytes of an upload leave: ``(sent, total)``."""


def token_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """The API token to send: ``$MLOPS_TOKEN``, else ``$REGISTRY_ADMIN_TOKEN`` (a local stack's admin), else None."""
    env = os.environ if environ is None else environ
    return next((env[name].strip() for name in TOKEN_VARIABLES if env.get(name, "").strip()), None)


def url_from_env(service: Service, environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return (env.get(URL_VARIABLES[service], "").strip() or DEFAULT_URLS[service]).rstrip("/")


@dataclass(frozen=True)
class Config:
    """Where the services are, the token, and how patient to be."""

    urls: dict[Service, str]
    token: str | None
    timeout: float
    retries: int
    backoff: float
    max_backoff: float

    @classmethod
    def build(cls, *, predictor_url: str | None, trainer_url: str | None, registry_url: str | None,
              token: str | None, timeout: float, retries: int, backoff: float, max_backoff: float) -> Config:
        given: dict[Service, str | None] = {"predictor": predictor_url, "trainer": trainer_url,
                                            "registry": registry_url}
        urls: dict[Service, str] = {s: (u.rstrip("/") if u else url_from_env(s)) for s, u in given.items()}
        if retries < 0 or timeout <= 0 or backoff < 0:
            raise ValueError("retries and backoff must be >= 0 and timeout > 0")
        return cls(urls, token if token is not None else token_from_env(), timeout, retries, backoff, max_backoff)

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "mlops-client"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def delay(self, attempt: int, response: httpx.Response | None) -> float:
        """Seconds before try ``attempt + 1``: the server's ``Retry-After`` when it sent one, else exponential
        backoff (``backoff * 2**attempt``, jittered by up to 10 %), both capped at ``max_backoff``."""
        after = retry_after(response) if response is not None else None
        if after is None:
            after = self.backoff * 2 ** attempt * (1 + random.random() / 10)
        return min(max(after, 0.0), self.max_backoff)


def retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - time.time()


@dataclass
class Call(Generic[T]):
    """One HTTP call and how to read its answer. ``idempotent`` calls are retried on 503 and connection errors."""

    service: Service
    method: str
    path: str
    adapter: TypeAdapter[T]
    params: dict[str, Any] | None = None
    json: Any = None
    key: str | None = None  # the answer's field holding the result ({"jobs": [...]})
    idempotent: bool = False
    files: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def request(self) -> dict[str, Any]:
        params = {k: v for k, v in (self.params or {}).items() if v is not None}
        kwargs: dict[str, Any] = {"params": params or None}
        if self.json is not None:
            kwargs["json"] = self.json
        if self.files is not None:
            kwargs["files"] = self.files
        return kwargs

    def read(self, response: httpx.Response) -> T:
        if response.status_code >= 400:
            raise refusal(response, self.service)
        data = response.json()
        return self.adapter.validate_python(data[self.key] if self.key else data)


def call(service: Service, method: str, path: str, result: Any, *, idempotent: bool | None = None,
         **kwargs: Any) -> Call[Any]:
    adapter: TypeAdapter[Any] = TypeAdapter(result)
    return Call(service, method, path, adapter, idempotent=method == "GET" if idempotent is None else idempotent,
                **kwargs)


def detail_of(response: httpx.Response) -> Any:
    """The server's reason: ``detail`` (the services), ``error`` (OIP v2), ``message`` (MLflow), else the text."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip() or response.reason_phrase
    if isinstance(body, dict):
        for key in ("detail", "error", "message"):
            if key in body:
                return body[key]
    return body


def describe(detail: Any) -> str:
    """A reason as one line; FastAPI's validation errors as ``field: message`` pairs."""
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list) and all(isinstance(d, dict) and "msg" in d for d in detail):
        parts = []
        for item in detail:
            loc = [str(p) for p in item.get("loc", []) if p not in ("body", "query", "path")]
            parts.append(f"{'.'.join(loc)}: {item['msg']}" if loc else str(item["msg"]))
        return "; ".join(parts)
    return json.dumps(detail, default=str)


def refusal(response: httpx.Response, service: Service) -> MlopsError:
    detail = detail_of(response)
    status = response.status_code
    message = f"{SERVICE_NAMES[service]} answered {status}: {describe(detail)}"
    return error_class(status)(message, status=status, detail=detail, url=str(response.request.url),
                               headers={k.lower(): v for k, v in response.headers.items()})


def unreachable(exc: httpx.HTTPError, call: Call[Any], base_url: str) -> UnavailableError:
    kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "unreachable"
    return UnavailableError(f"{SERVICE_NAMES[call.service]} {kind} at {base_url}: {exc or type(exc).__name__}",
                            url=f"{base_url}{call.path}")


class ProgressReader:
    """A file whose reads report how much of it has left (httpx reads an upload in chunks, from the start)."""

    def __init__(self, handle: IO[bytes], total: int, callback: UploadProgress) -> None:
        self._handle = handle
        self._total = total
        self._callback = callback
        self._sent = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._handle.read(size)
        if chunk:
            self._sent += len(chunk)
            self._callback(self._sent, self._total)
        return chunk

    def seek(self, offset: int, whence: int = 0) -> int:
        position = self._handle.seek(offset, whence)
        self._sent = position
        return position

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


def upload_files(path: Path, handle: IO[bytes], on_progress: UploadProgress | None) -> dict[str, Any]:
    body: Any = handle if on_progress is None else ProgressReader(handle, path.stat().st_size, on_progress)
    return {"file": (path.name, body)}
