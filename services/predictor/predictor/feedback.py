"""Predictions kept in Redis (with a TTL) for ground-truth feedback, and live quality over a window.

The request path only appends to an in-memory buffer; a background task writes it with one pipelined round
trip every ``FLUSH_SECONDS``. Feedback finds a prediction in the buffer or in Redis, refuses duplicates with
``SET NX``, and pushes the outcome (1/0 for a label, the absolute error for a value) onto a capped Redis
list that every replica of the model shares; live accuracy or MAE is the mean of that list. The same outcome
goes onto a list per version (the version that answered), and when a shadow version also scored the request
(:meth:`FeedbackStore.record_shadow`), the shadow's outcome onto the shadow version's list: live quality per
version over the same requests (``predictor_version_live_accuracy`` / ``_mae``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import orjson
import redis.asyncio as aioredis

from mlops_common.errors import ServiceError
from predictor import metrics, servedlog

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.05
MAX_BUFFER = 50_000


class FeedbackError(ServiceError):
    """A refused feedback, with the outcome it is counted under in ``predictor_feedback_total``."""

    def __init__(self, status: int, detail: str, outcome: str) -> None:
        super().__init__(detail, status_code=status)
        self.outcome = outcome


class FeedbackStore:
    def __init__(self, redis_url: str, prefix: str, model_name: str) -> None:
        self.redis = aioredis.from_url(redis_url, socket_connect_timeout=3, socket_timeout=3)
        self.model_name = model_name
        self.prefix = f"{prefix}:{model_name}"
        self.buffer: dict[str, bytes] = {}
        self.served_log = servedlog.shared()  # what was served, for production datasets (None: off)
        self.shadow_buffer: dict[str, bytes] = {}
        self.versions: set[str] = set()  # the versions whose live quality this replica has published
        self.ttl_seconds = 7 * 24 * 3600
        self.window_size = 500
        self.task: asyncio.Task[None] | None = None
        self.stored = metrics.STORE_WRITES.labels(model_name, "stored")
        self.dropped = metrics.STORE_WRITES.labels(model_name, "dropped")

    def configure(self, ttl_seconds: int, window_size: int) -> None:
        self.ttl_seconds, self.window_size = ttl_seconds, window_size

    def _key(self, request_id: str) -> str:
        return f"{self.prefix}:pred:{request_id}"

    def _shadow_key(self, request_id: str) -> str:
        return f"{self.prefix}:shadow:{request_id}"

    def _window_key(self, version: str | None = None) -> str:
        return f"{self.prefix}:quality" if version is None else f"{self.prefix}:quality:v:{version}"

    def record(self, request_id: str, version: str, predictions: list[Any], rows: list[Any] | None = None) -> None:
        if self.served_log is not None and rows is not None:
            self.served_log.record(self.model_name, request_id, version, rows, predictions)
        if len(self.buffer) >= MAX_BUFFER:
            self.dropped.inc()
            return
        self.buffer[request_id] = orjson.dumps({"v": version, "p": predictions, "t": time.time()})

    def record_shadow(self, request_id: str, version: str, predictions: list[Any]) -> None:
        """The shadow version's predictions for a request production answered, kept for the same feedback."""
        if len(self.shadow_buffer) >= MAX_BUFFER:
            self.dropped.inc()
            return
        self.shadow_buffer[request_id] = orjson.dumps({"v": version, "p": predictions, "t": time.time()})

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._flush_loop(), name="prediction-store")
        if self.served_log is not None:
            self.served_log.start()

    async def stop(self) -> None:
        if self.served_log is not None:
            await self.served_log.stop()
        if self.task:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        with contextlib.suppress(Exception):
            await self.flush()
        with contextlib.suppress(Exception):
            await self.redis.aclose()

    async def flush(self) -> None:
        if not self.buffer and not self.shadow_buffer:
            return
        batch, self.buffer = self.buffer, {}
        shadows, self.shadow_buffer = self.shadow_buffer, {}
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for request_id, value in batch.items():
                    pipe.set(self._key(request_id), value, ex=self.ttl_seconds)
                for request_id, value in shadows.items():
                    pipe.set(self._shadow_key(request_id), value, ex=self.ttl_seconds)
                await pipe.execute()
            self.stored.inc(len(batch))
        except Exception as exc:  # noqa: BLE001 - feedback joins are best effort: serving goes on
            self.dropped.inc(len(batch))
            log.warning("could not store %d predictions for feedback: %s", len(batch), exc)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            await self.flush()

    async def _prediction(self, request_id: str) -> dict[str, Any] | None:
        raw = self.buffer.get(request_id)
        if raw is None:
            raw = await self.redis.get(self._key(request_id))
        return orjson.loads(raw) if raw is not None else None

    async def _shadow_prediction(self, request_id: str) -> dict[str, Any] | None:
        raw = self.shadow_buffer.get(request_id)
        if raw is None:
            raw = await self.redis.get(self._shadow_key(request_id))
        return orjson.loads(raw) if raw is not None else None

    async def submit(self, request_id: str, label: Any, value: Any, index: int | None,
                     classifier: bool) -> dict[str, Any]:
        try:
            return await self._submit(request_id, label, value, index, classifier)
        except FeedbackError as exc:
            metrics.FEEDBACK.labels(self.model_name, exc.outcome).inc()
            raise
        except (aioredis.ConnectionError, aioredis.TimeoutError, OSError) as exc:
            metrics.FEEDBACK.labels(self.model_name, "unavailable").inc()
            raise FeedbackError(503, f"the feedback store (Redis) is unavailable: {exc}", "unavailable") from exc

    async def _submit(self, request_id: str, label: Any, value: Any, index: int | None,
                      classifier: bool) -> dict[str, Any]:
        if classifier and label is None:
            raise FeedbackError(422, "this model is a classifier: send 'label'", "invalid")
        if not classifier and value is None:
            raise FeedbackError(422, "this model predicts values: send 'value'", "invalid")
        stored = await self._prediction(request_id)
        if stored is None:
            raise FeedbackError(404, f"unknown request_id {request_id!r}: never served by this model, or its "
                                     f"prediction expired (kept {self.ttl_seconds}s)", "unknown")
        predictions = stored["p"]
        if index is None:
            if len(predictions) != 1:
                raise FeedbackError(422, f"request {request_id} had {len(predictions)} instances: "
                                         "send 'index' to say which one this feedback is about", "invalid")
            index = 0
        if not 0 <= index < len(predictions):
            raise FeedbackError(422, f"index {index} out of range: request {request_id} had "
                                     f"{len(predictions)} instances", "invalid")
        predicted = predictions[index]
        if classifier:
            outcome_value = 1.0 if str(label) == str(predicted) else 0.0
        else:
            if not isinstance(predicted, int | float):
                raise FeedbackError(422, "the stored prediction is not numeric", "invalid")
            outcome_value = abs(float(value) - float(predicted))
        first = await self.redis.set(f"{self.prefix}:fb:{request_id}:{index}", "1", nx=True, ex=self.ttl_seconds)
        if not first:
            raise FeedbackError(409, f"feedback for request {request_id} (index {index}) was already recorded",
                                "duplicate")
        outcomes = {stored["v"]: outcome_value}
        shadow = await self._shadow_prediction(request_id)
        if shadow is not None and index < len(shadow["p"]) and shadow["v"] not in outcomes:
            theirs = shadow["p"][index]
            if classifier:
                outcomes[shadow["v"]] = 1.0 if str(label) == str(theirs) else 0.0
            elif isinstance(theirs, int | float):
                outcomes[shadow["v"]] = abs(float(value) - float(theirs))
        window_key = self._window_key()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lpush(window_key, outcome_value)
            pipe.ltrim(window_key, 0, self.window_size - 1)
            pipe.lrange(window_key, 0, -1)
            for version, outcome in outcomes.items():
                pipe.lpush(self._window_key(version), outcome)
                pipe.ltrim(self._window_key(version), 0, self.window_size - 1)
                pipe.expire(self._window_key(version), self.ttl_seconds)
                pipe.lrange(self._window_key(version), 0, -1)
            replies = await pipe.execute()
        window = replies[2]
        live = sum(float(x) for x in window) / len(window)
        (metrics.LIVE_ACCURACY if classifier else metrics.LIVE_MAE).labels(self.model_name).set(live)
        for i, version in enumerate(outcomes):
            self._publish_version(version, replies[3 + 4 * i + 3], classifier)
        metrics.FEEDBACK.labels(self.model_name, "accepted").inc()
        if self.served_log is not None:
            self.served_log.label(self.model_name, request_id, index, label if classifier else value)
        answer: dict[str, Any] = {"request_id": request_id, "index": index, "model_version": stored["v"],
                                  "prediction": predicted, "window": len(window)}
        if classifier:
            answer.update(correct=bool(outcome_value), live_accuracy=round(live, 6))
        else:
            answer.update(absolute_error=round(outcome_value, 6), live_mae=round(live, 6))
        return answer

    def _publish_version(self, version: str, window: list[Any], classifier: bool) -> None:
        if window:
            self.versions.add(version)
            live = sum(float(x) for x in window) / len(window)
            (metrics.VERSION_LIVE_ACCURACY if classifier else metrics.VERSION_LIVE_MAE).labels(
                self.model_name, version).set(live)

    async def refresh(self, classifier: bool, versions: tuple[str, ...] = ()) -> None:
        """Re-read the shared windows (other replicas add to them too): the model's and those of ``versions``
        and of every version already published here."""
        window = await self.redis.lrange(self._window_key(), 0, -1)
        if window:
            live = sum(float(x) for x in window) / len(window)
            (metrics.LIVE_ACCURACY if classifier else metrics.LIVE_MAE).labels(self.model_name).set(live)
        for version in sorted(self.versions.union(versions)):
            self._publish_version(version, await self.redis.lrange(self._window_key(version), 0, -1), classifier)
