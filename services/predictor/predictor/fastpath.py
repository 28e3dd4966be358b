"""The lean path: a pure ASGI middleware in front of FastAPI that answers POST /predict, /invocations,
/models/{name}[/versions/{v}]/predict and the Open Inference Protocol's /v2/models/{name}[/versions/{v}]/infer.

FastAPI routing, dependency resolution and the instrumentator's per-request wrappers cost more CPU than a
micro-batched prediction of a few texts, so this path skips them: it reads the body with a size limit,
parses it with orjson, validates it against the served version's signature, hands it to the micro-batcher
and writes the answer (the scoring itself is the service's: :meth:`PredictorService.predict`). It still
records the instrumentator's HTTP metrics for both (same families, same labels), counts arrivals for the
batcher, and answers every failure with a JSON 4xx/5xx: a ``ServiceError``'s own body (``{"detail": ...}``
from :func:`mlops_common.errors.error_body`; MLflow's shape for /invocations; the protocol's
``{"error": ...}`` for /v2).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.datastructures import State

from mlops_common import observability
from mlops_common.auth import AuthError, Permission, authorize
from mlops_common.errors import ServiceError, TooLarge, error_body
from predictor import metrics, oip
from predictor.batching import COUNTED
from predictor.context import PredictorContext
from predictor.errors import not_started
from predictor.routing import SERVED, VERSION_HEADER
from predictor.service import PredictorService

log = logging.getLogger(__name__)

PATH = "/predict"
INVOCATIONS = "/invocations"
MODELS_PREFIX = "/models/"
MODEL_PATH = "/models/{name}/predict"
VERSION_PATH = "/models/{name}/versions/{version}/predict"
V2_PREFIX = "/v2/models/"
V2_PATH = "/v2/models/{name}/infer"
V2_VERSION_PATH = "/v2/models/{name}/versions/{version}/infer"
JSON_HEADERS = [(b"content-type", b"application/json")]


def too_large(limit: int, length: int | None = None) -> TooLarge:
    if length is None:
        return TooLarge(f"request body is over the limit of {limit} bytes")
    return TooLarge(f"request body of {length} bytes is over the limit of {limit} bytes")


class HttpMetrics:
    """Records one handler in the service's HTTP metric families (the instrumentator's, see
    :func:`mlops_common.observability.http_metrics`), with the label children bound once per status."""

    def __init__(self, namespace: str, handler: str, method: str) -> None:
        self.namespace, self.handler, self.method = namespace, handler, method
        self.families: observability.HttpMetrics | None = None
        self.children: dict[int, tuple[Any, Any, Any, Any, Any]] = {}

    def _children(self, status: int) -> tuple[Any, Any, Any, Any, Any]:
        found = self.children.get(status)
        if found is None:
            if self.families is None:
                self.families = observability.http_metrics(self.namespace)
            m, handler, method = self.families, self.handler, self.method
            found = self.children[status] = (
                m.requests.labels(method, str(status), handler), m.request_size.labels(handler),
                m.response_size.labels(handler), m.latency_highr, m.latency.labels(method, handler))
        return found

    def observe(self, status: int, seconds: float, request_bytes: int, response_bytes: int) -> None:
        total, request_size, response_size, latency_highr, latency = self._children(status)
        total.inc()
        request_size.observe(request_bytes)
        response_size.observe(response_bytes)
        latency_highr.observe(seconds)
        latency.observe(seconds)


def model_target(path: str, prefix: str = MODELS_PREFIX, verb: str = "predict") -> tuple[str, str | None] | None:
    """(name, version) of ``{prefix}{name}/{verb}`` or ``{prefix}{name}/versions/{version}/{verb}``."""
    parts = path[len(prefix):].split("/")
    if len(parts) == 2 and parts[1] == verb and parts[0]:
        return parts[0], None
    if len(parts) == 4 and parts[1] == "versions" and parts[3] == verb and parts[0] and parts[2]:
        return parts[0], parts[2]
    return None


def _headers(extra: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [*JSON_HEADERS, *((k.lower().encode(), v.encode()) for k, v in extra.items())]


class FastPredict:
    """Outermost ASGI middleware: POST /predict, /invocations and /models/{name}[/versions/{v}]/predict are
    answered here, everything else goes to
    the app. The predictor's context (:class:`PredictorContext`) is read from the app's ``state`` per request:
    the lifespan builds it after this middleware is made."""

    def __init__(self, app: Any, state: State, namespace: str = "predictor") -> None:
        self.app, self.state = app, state
        self.routes = {PATH: (self._predict, HttpMetrics(namespace, PATH, "POST")),
                       INVOCATIONS: (self._invocations, HttpMetrics(namespace, INVOCATIONS, "POST"))}
        self.model_routes = {False: (self._predict, HttpMetrics(namespace, MODEL_PATH, "POST")),
                             True: (self._predict, HttpMetrics(namespace, VERSION_PATH, "POST"))}
        self.v2_routes = {False: (self._infer, HttpMetrics(namespace, V2_PATH, "POST")),
                          True: (self._infer, HttpMetrics(namespace, V2_VERSION_PATH, "POST"))}
        self.per_model = metrics.ModelRequests()
        self.version_headers: dict[str, list[tuple[bytes, bytes]]] = {}

    def _answered_by(self, version: str) -> list[tuple[bytes, bytes]]:
        """The headers of an answer: JSON, and which version answered (``X-Model-Version``)."""
        found = self.version_headers.get(version)
        if found is None:
            found = self.version_headers[version] = [*JSON_HEADERS, (VERSION_HEADER, version.encode())]
        return found

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        route = self.routes.get(path)
        name = version = None
        protocol = False  # an Open Inference Protocol route: refusals are {"error": ...}
        if route is None:
            if path.startswith(MODELS_PREFIX):
                target = model_target(path)
            elif path.startswith(V2_PREFIX):
                target, protocol = model_target(path, V2_PREFIX, "infer"), True
            else:
                target = None
            if target is None:
                await self.app(scope, receive, send)
                return
            name, version = target
            route = (self.v2_routes if protocol else self.model_routes)[version is not None]
        answer, http = route
        started = time.perf_counter()
        ctx: PredictorContext | None = getattr(self.state, "ctx", None)
        if ctx is None:
            refusal = not_started()
            await self._send(send, refusal.status_code, oip.error_body(refusal.detail) if protocol else refusal.body(),
                             JSON_HEADERS)
            return
        service, settings = ctx.service, ctx.settings
        if name is not None:
            service = ctx.catalog.services.get(name)  # type: ignore[assignment]
        # Counted as arriving until the request reaches the micro-batcher's queue (or is known not to).
        arrivals = (service or ctx.service).arrivals
        arrivals.arriving += 1
        scope[COUNTED] = False
        size = 0
        headers = JSON_HEADERS
        try:
            # Predictions are reads: open without a token when AUTH_OPEN_READS; a token that is sent is checked.
            authorization = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), None)
            if authorization is not None or not settings.open_reads:
                # app.state.authenticator: the one the FastAPI routes check tokens with (the same object)
                await authorize(self.state.authenticator, authorization, Permission.READ, settings.open_reads)
            body, size = await self._read(scope, receive, settings.max_body_bytes)
            if body is None:
                return  # the client went away
            if service is None:
                raise ctx.catalog.unknown(str(name))
            status, content = 200, await answer(service, body, scope, version)
            served = scope.get(SERVED)
            if served is not None:
                headers = self._answered_by(served)
        except ServiceError as exc:
            status, content = exc.status_code, oip.error_body(exc.detail) if protocol else exc.body()
            if exc.headers:
                headers = _headers(exc.headers)
        except AuthError as exc:
            status, content = exc.status, (oip.error_body if protocol else error_body)(exc.detail)
            headers = _headers(exc.headers)
        except Exception as exc:
            log.exception("unexpected error on %s", scope["path"])
            status = 500
            content = (oip.error_body if protocol else error_body)(f"internal error: {type(exc).__name__}")
        finally:
            if not scope[COUNTED]:
                arrivals.arriving -= 1
        await self._send(send, status, content, headers)
        seconds = time.perf_counter() - started
        http.observe(status, seconds, size, len(content))
        if service is not None:
            self.per_model.observe(service.name, scope.get(SERVED, ""), status, seconds)

    @staticmethod
    async def _send(send: Any, status: int, content: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [*headers, (b"content-length", str(len(content)).encode())]})
        await send({"type": "http.response.body", "body": content})

    @staticmethod
    async def _predict(service: PredictorService, body: bytes, scope: dict[str, Any], version: str | None) -> bytes:
        return await service.predict(body, scope, version)

    @staticmethod
    async def _invocations(service: PredictorService, body: bytes, scope: dict[str, Any], _: str | None) -> bytes:
        content_type = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"content-type"), "")
        return await service.invocations(body, content_type, scope)

    async def _infer(self, service: PredictorService, body: bytes, scope: dict[str, Any], version: str | None) -> bytes:
        wanted = oip.HEADER_LENGTH.encode()
        header_length = next((v.decode("latin-1") for k, v in scope["headers"] if k == wanted), None)
        return await oip.infer_body(self.state.ctx.catalog, service.name, version, body, header_length, scope)

    @staticmethod
    async def _read(scope: dict[str, Any], receive: Any, limit: int) -> tuple[bytes | None, int]:
        for name, value in scope["headers"]:
            if name == b"content-length":
                if value.isdigit() and int(value) > limit:
                    raise too_large(limit, int(value))
                break
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None, size
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return (chunks[0] if len(chunks) == 1 else b"".join(chunks)), size
