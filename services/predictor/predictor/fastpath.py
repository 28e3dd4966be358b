"""The lean path: a pure ASGI middleware in front of FastAPI that answers POST /predict and /invocations.

FastAPI routing, dependency resolution and the instrumentator's per-request wrappers cost more CPU than a
micro-batched prediction of a few texts, so this path skips them: it reads the body with a size limit,
parses it with orjson, validates it against the served version's signature, hands it to the micro-batcher
and writes the answer. It still records the instrumentator's HTTP metrics for both (same families,
same labels), counts arrivals for the batcher, and answers every failure with a JSON 4xx/5xx.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import MutableMapping
from typing import Any

import orjson

from mlops_common import observability
from mlops_common.auth import Authenticator, AuthError, Permission, authorize
from predictor import invocations
from predictor.batching import COUNTED, ModelError
from predictor.inputs import InputError, check_list
from predictor.service import PredictorService
from predictor.settings import PredictorSettings

log = logging.getLogger(__name__)

PATH = "/predict"
INVOCATIONS = "/invocations"
JSON_HEADERS = [(b"content-type", b"application/json")]


class Reply(Exception):
    """Stops the request with this status and detail."""

    def __init__(self, status: int, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.body = orjson.dumps({"detail": detail, **extra})


def not_serving(name: str) -> Reply:
    return Reply(503, f"no production version of model {name!r} is being served yet: "
                      "nothing holds the 'production' alias, or it is still loading")


async def predict(svc: PredictorService, cfg: PredictorSettings, body: bytes, scope: MutableMapping[str, Any]
                  ) -> bytes:
    """Score one /predict body; raises :class:`Reply` for every refusal."""
    model = svc.model
    if model is None:
        raise not_serving(svc.name)
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Reply(400, f"malformed JSON: {exc}") from None
    if type(payload) is not dict:
        raise Reply(422, 'the body must be a JSON object {"instances": [...]}', field="body")
    probabilities = payload.get("probabilities", False)
    try:
        if "instances" not in payload:
            raise InputError("instances", 'missing: send {"instances": [...]}')
        if type(probabilities) is not bool:
            raise InputError("probabilities", "expected a boolean")
        rows = model.inputs.validate(check_list(payload["instances"], cfg.max_instances))
    except InputError as exc:
        raise Reply(422, str(exc), field=exc.field) from None
    if probabilities and not model.is_classifier:
        raise Reply(422, "probabilities are only available for classifiers", field="probabilities")
    svc.arrivals.queued(scope)
    assert svc.batcher is not None
    try:
        served, values, probs = await svc.batcher.submit(rows, probabilities, model)
    except InputError as exc:
        raise Reply(422, str(exc), field=exc.field) from None
    except ModelError as exc:
        raise Reply(422, str(exc)) from None
    request_id = uuid.uuid4().hex
    svc.store.record(request_id, served.version, values)
    answer: dict[str, Any] = {"predictions": values, "model_name": served.name, "model_version": served.version,
                              "request_id": request_id}
    if probs is not None:
        answer["probabilities"] = probs
    return orjson.dumps(answer)


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


class FastPredict:
    """Outermost ASGI middleware: POST /predict and /invocations are answered here, everything else goes to
    the app."""

    def __init__(self, app: Any, service: PredictorService, settings: PredictorSettings,
                 namespace: str = "predictor", authenticator: Authenticator | None = None) -> None:
        self.app, self.service, self.settings = app, service, settings
        # Predictions are reads: open without a token when AUTH_OPEN_READS; a token that is sent is checked.
        self.authenticator, self.open_reads = authenticator, settings.open_reads
        self.routes = {PATH: (self._predict, HttpMetrics(namespace, PATH, "POST")),
                       INVOCATIONS: (self._invocations, HttpMetrics(namespace, INVOCATIONS, "POST"))}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        route = self.routes.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        answer, http = route
        started = time.perf_counter()
        # Counted as arriving until the request reaches the micro-batcher's queue (or is known not to).
        arrivals = self.service.arrivals
        arrivals.arriving += 1
        scope[COUNTED] = False
        size = 0
        headers = JSON_HEADERS
        try:
            if self.authenticator is not None:
                authorization = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"),
                                     None)
                if authorization is not None or not self.open_reads:
                    await authorize(self.authenticator, authorization, Permission.READ, self.open_reads)
            body, size = await self._read(scope, receive)
            if body is None:
                return  # the client went away
            status, content = await answer(body, scope)
        except Reply as reply:
            status, content = reply.status, reply.body
        except AuthError as exc:
            status, content = exc.status, orjson.dumps({"detail": exc.detail})
            headers = [*JSON_HEADERS, *((k.lower().encode(), v.encode()) for k, v in exc.headers.items())]
        except Exception:
            log.exception("unexpected error on %s", scope["path"])
            status, content = 500, b'{"detail":"internal error"}'
        finally:
            if not scope[COUNTED]:
                arrivals.arriving -= 1
        await send({"type": "http.response.start", "status": status,
                    "headers": [*headers, (b"content-length", str(len(content)).encode())]})
        await send({"type": "http.response.body", "body": content})
        http.observe(status, time.perf_counter() - started, size, len(content))

    async def _predict(self, body: bytes, scope: dict[str, Any]) -> tuple[int, bytes]:
        return 200, await predict(self.service, self.settings, body, scope)

    async def _invocations(self, body: bytes, scope: dict[str, Any]) -> tuple[int, bytes]:
        content_type = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"content-type"), "")
        return await invocations.handle(self.service, self.settings, body, content_type, scope)

    async def _read(self, scope: dict[str, Any], receive: Any) -> tuple[bytes | None, int]:
        limit = self.settings.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"content-length":
                if value.isdigit() and int(value) > limit:
                    raise Reply(413, f"request body of {int(value)} bytes is over the limit of {limit} bytes")
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
                raise Reply(413, f"request body is over the limit of {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return (chunks[0] if len(chunks) == 1 else b"".join(chunks)), size
