"""Adaptive micro-batching: concurrent /predict requests are scored by one ``predict`` call.

Requests are counted as they enter the app (by :class:`predictor.fastpath.FastPredict`, the outermost ASGI
middleware) and again when they reach the queue. The batch loop takes whatever is queued and, while more
requests are known to be on their way (entered but not queued yet) and the batch is not full, yields to the
event loop for at most ``max_wait`` seconds. An idle server therefore answers a lone request at once, and a
busy one coalesces. Small batches run on the event loop (no thread hop); big ones in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, MutableMapping
from typing import Any

from predictor.inputs import InputError

log = logging.getLogger(__name__)

COUNTED = "predictor.queued"


class Arrivals:
    """Requests to the batched paths that have entered the app but not reached the queue yet."""

    def __init__(self) -> None:
        self.arriving = 0

    def queued(self, scope: MutableMapping[str, Any]) -> None:
        if scope.get(COUNTED) is False:
            scope[COUNTED] = True
            self.arriving -= 1


class Job:
    __slots__ = ("future", "model", "probabilities", "rows")

    def __init__(self, rows: list[Any], probabilities: bool, model: Any, future: asyncio.Future[Any]) -> None:
        self.rows, self.probabilities, self.model, self.future = rows, probabilities, model, future


class ModelError(RuntimeError):
    """The model raised on these instances (answered as 422: the input does not suit the model)."""


class MicroBatcher:
    def __init__(self, current_model: Callable[[], Any], after_batch: Callable[[Any, list[Job], list[Any]], None],
                 max_batch_size: int, max_wait_seconds: float, inline_max_rows: int,
                 arrivals: Arrivals | None = None) -> None:
        self.current_model = current_model
        self.after_batch = after_batch
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_seconds
        self.inline_max_rows = inline_max_rows
        self.arrivals = arrivals
        self.pending: deque[Job] = deque()
        self.wakeup = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.scoring = False

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass

    def submit(self, rows: list[Any], probabilities: bool, model: Any) -> asyncio.Future[Any]:
        future = asyncio.get_running_loop().create_future()
        self.pending.append(Job(rows, probabilities, model, future))
        self.wakeup.set()
        return future

    def _pending_rows(self) -> int:
        return sum(len(j.rows) for j in self.pending)

    async def _gather(self) -> None:
        if self.max_wait <= 0 or self.arrivals is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while (self.arrivals.arriving > 0 and loop.time() < deadline
               and self._pending_rows() < self.max_batch_size):
            await asyncio.sleep(0)

    def _take(self) -> list[Job]:
        jobs = [self.pending.popleft()]
        rows = len(jobs[0].rows)
        while self.pending and rows + len(self.pending[0].rows) <= self.max_batch_size:
            job = self.pending.popleft()
            rows += len(job.rows)
            jobs.append(job)
        return jobs

    async def _run(self) -> None:
        while True:
            if not self.pending:
                self.wakeup.clear()
                await self.wakeup.wait()
            await self._gather()
            jobs = self._take()
            self.scoring = True
            try:
                await self._score(jobs)
            except Exception:  # never let the loop die; each job already got its answer or gets this one
                log.exception("batch failed")
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(ModelError("internal error while scoring"))
            finally:
                self.scoring = False

    async def drain(self, timeout: float = 30.0) -> None:
        """Stop once the queued requests are answered (at most ``timeout`` seconds from now)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while (self.pending or self.scoring) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        await self.stop()

    async def _predict(self, model: Any, rows: list[Any], probabilities: bool) -> tuple[list[Any], Any]:
        if len(rows) <= self.inline_max_rows:
            return model.predict(rows, probabilities)
        return await asyncio.to_thread(model.predict, rows, probabilities)

    async def _score(self, jobs: list[Job]) -> None:
        model = self.current_model()
        live = [job for job in jobs if not job.future.done()]
        for job in live:
            if job.model is not model:
                # Validated against a version that was swapped out meanwhile: re-check against this one.
                if (job.model.inputs.kind, job.model.inputs.columns) != (model.inputs.kind, model.inputs.columns):
                    try:
                        job.rows = model.inputs.validate(job.rows)
                    except InputError as exc:
                        job.future.set_exception(exc)
                        continue
                job.model = model
        live = [job for job in live if not job.future.done()]
        if not live:
            return
        rows = [row for job in live for row in job.rows]
        probabilities = any(job.probabilities for job in live)
        try:
            values, probs = await self._predict(model, rows, probabilities)
        except Exception:  # noqa: BLE001 - any model failure: find the request it chokes on
            if len(live) == 1:
                job = live[0]
                job.future.set_exception(ModelError(self._reason()))
                return
            # Isolate the request the model chokes on: score each alone.
            for job in live:
                await self._score_alone(model, job)
            return
        start = 0
        for job in live:
            end = start + len(job.rows)
            job.future.set_result((model, values[start:end],
                                   probs[start:end] if probs is not None and job.probabilities else None))
            start = end
        self.after_batch(model, live, values)

    async def _score_alone(self, model: Any, job: Job) -> None:
        try:
            values, probs = await self._predict(model, job.rows, job.probabilities)
        except Exception:  # noqa: BLE001 - any model failure is this request's 422
            job.future.set_exception(ModelError(self._reason()))
            return
        job.future.set_result((model, values, probs))
        self.after_batch(model, [job], values)

    @staticmethod
    def _reason() -> str:
        import sys

        exc = sys.exc_info()[1]
        return f"the model could not score these instances: {type(exc).__name__}: {exc}"[:500]
