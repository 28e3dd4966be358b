"""The rollout split of one model as this predictor follows it: which version answers a request (production or
the canary, sticky by ``X-Rollout-Key``) and the shadow traffic mirrored off the request path.

The split is read from the registered model's ``mlops.rollout`` tag with the aliases
(:meth:`predictor.following.MlflowAliases.state`); :class:`Routing` is what the request path looks at, ``None``
when there is no split, so the common case costs one attribute check. A canary or shadow version that is not
held yet is loaded in the background (:meth:`predictor.versions.VersionPool.ready`) and simply not used until
it is: production answers meanwhile.

Shadow: after the client's answer is computed, the request's instances are put on a bounded queue
(``SHADOW_QUEUE_SIZE``); workers score them with the shadow version in a small dedicated thread pool
(``SHADOW_WORKERS``), compare with production's predictions (agreement per production class, or the absolute
difference of values) and keep the shadow's predictions beside production's in the feedback store, so that
feedback scores both versions over the same requests. A full queue sheds the mirror and a failing shadow is
counted: neither reaches the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlops_common.rollout import ROLLOUT_KEY_HEADER, RolloutSplit
from predictor import metrics
from predictor.loading import LoadedModel

if TYPE_CHECKING:
    from predictor.feedback import FeedbackStore

log = logging.getLogger(__name__)

SERVED = "predictor.served"  # ASGI scope key: the version that answered the request
KEY_HEADER = ROLLOUT_KEY_HEADER.lower().encode()
MODEL_VERSION_HEADER = "X-Model-Version"  # the version that answered, on every answer of a prediction
VERSION_HEADER = MODEL_VERSION_HEADER.lower().encode()


def rollout_key(scope: MutableMapping[str, Any] | None) -> str | None:
    """The request's ``X-Rollout-Key``, if it sent one."""
    if scope is None:
        return None
    return next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == KEY_HEADER), None)


@dataclass(frozen=True)
class Routing:
    """A split with something to do (a canary with weight or a shadow with a share)."""

    split: RolloutSplit
    canary: str | None
    shadow: str | None

    @classmethod
    def of(cls, split: RolloutSplit) -> Routing | None:
        canary = split.canary.version if split.canary is not None and split.canary.weight > 0 else None
        shadow = split.shadow.version if split.shadow is not None and split.shadow.share > 0 else None
        if canary is None and shadow is None:
            return None
        return cls(split=split, canary=canary, shadow=shadow)


def publish_split(name: str, split: RolloutSplit, before: RolloutSplit | None) -> None:
    """``predictor_rollout_share`` for the split followed (the previous split's series removed)."""
    for role, old in (("canary", before.canary), ("shadow", before.shadow)) if before is not None else ():
        if old is not None:
            with contextlib.suppress(KeyError):
                metrics.ROLLOUT_SHARE.remove(name, old.version, role)
    if split.canary is not None:
        metrics.ROLLOUT_SHARE.labels(name, split.canary.version, "canary").set(split.canary.weight)
    if split.shadow is not None:
        metrics.ROLLOUT_SHARE.labels(name, split.shadow.version, "shadow").set(split.shadow.share)


@dataclass
class Mirror:
    model: LoadedModel
    rows: list[Any]
    request_id: str
    production: list[Any]


class ShadowMirror:
    """Mirrored requests, scored by the shadow version off the request path."""

    def __init__(self, name: str, store: FeedbackStore, queue_size: int, workers: int) -> None:
        self.name = name
        self.store = store
        self.queue: asyncio.Queue[Mirror] = asyncio.Queue(maxsize=queue_size)
        self.workers = workers
        self.executor: ThreadPoolExecutor | None = None
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=f"shadow-{self.name}",
                                           initializer=_fast_sklearn)
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(self._run(), name=f"shadow-{self.name}") for _ in range(self.workers)]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.executor is not None:
            # A shadow still scoring is abandoned, not waited for.
            self.executor.shutdown(wait=False, cancel_futures=True)

    def offer(self, model: LoadedModel, rows: list[Any], request_id: str, production: list[Any]) -> None:
        """Queue one request for the shadow; shed (and counted) when the queue is full."""
        try:
            self.queue.put_nowait(Mirror(model, rows, request_id, production))
        except asyncio.QueueFull:
            metrics.SHADOW_REQUESTS.labels(self.name, model.version, "shed").inc()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            job = await self.queue.get()
            version = job.model.version
            started = time.perf_counter()
            try:
                values, _ = await loop.run_in_executor(self.executor, job.model.predict, job.rows, False)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a failing shadow is counted, never raised
                metrics.SHADOW_REQUESTS.labels(self.name, version, "error").inc()
                log.debug("shadow version %s failed on request %s: %s", version, job.request_id, exc)
                continue
            metrics.SHADOW_LATENCY.labels(self.name, version).observe(time.perf_counter() - started)
            metrics.SHADOW_REQUESTS.labels(self.name, version, "ok").inc()
            try:
                self._compare(job, values)
                self.store.record_shadow(job.request_id, version, values)
            except Exception as exc:  # noqa: BLE001 - bookkeeping must not stop the mirror
                log.warning("could not compare the shadow's predictions: %s", exc)

    def _compare(self, job: Mirror, values: list[Any]) -> None:
        version = job.model.version
        if job.model.is_classifier:
            for label, counts in _agreement(job.production, values).items():
                metrics.SHADOW_COMPARED.labels(self.name, version, label).inc(counts[0])
                if counts[1]:
                    metrics.SHADOW_AGREED.labels(self.name, version, label).inc(counts[1])
                else:  # the series exists (at 0) so that agreement ratios have a denominator and a numerator
                    metrics.SHADOW_AGREED.labels(self.name, version, label)
            return
        histogram = metrics.SHADOW_ABS_DIFFERENCE.labels(self.name, version)
        for ours, theirs in zip(job.production, values, strict=False):
            if isinstance(ours, int | float) and isinstance(theirs, int | float):
                histogram.observe(abs(float(ours) - float(theirs)))


def _fast_sklearn() -> None:
    """The serving thread's sklearn settings (thread-local), for the shadow's threads too."""
    import sklearn

    sklearn.set_config(assume_finite=True, skip_parameter_validation=True)


def _agreement(production: list[Any], shadow: list[Any]) -> dict[str, list[int]]:
    """Per production class: [instances compared, instances the shadow agreed on]."""
    counts: dict[str, list[int]] = {}
    for ours, theirs in zip(production, shadow, strict=False):
        entry = counts.setdefault(str(ours), [0, 0])
        entry[0] += 1
        entry[1] += str(ours) == str(theirs)
    return counts
