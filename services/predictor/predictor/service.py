"""The predictor's running state: the followed model, the batcher, drift and feedback bookkeeping."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Any

from predictor import metrics
from predictor.batching import Arrivals, Job, MicroBatcher
from predictor.feedback import FeedbackStore
from predictor.following import ModelFollower
from predictor.loading import LoadedModel
from predictor.settings import PredictorSettings

log = logging.getLogger(__name__)


class PredictorService:
    def __init__(self, settings: PredictorSettings) -> None:
        self.settings = settings
        self.name = settings.model_name
        self.arrivals = Arrivals()
        self.follower = ModelFollower(settings, self._on_swap)
        self.store = FeedbackStore(settings.redis_url, settings.redis_key_prefix, self.name)
        self.batcher: MicroBatcher | None = None
        self.model_metrics: metrics.ModelMetrics | None = None
        self.tasks: list[asyncio.Task[None]] = []
        metrics.MODEL_LOADED.labels(self.name).set(0)

    @property
    def model(self) -> LoadedModel | None:
        return self.follower.current

    async def start(self) -> None:
        self.batcher = MicroBatcher(
            current_model=lambda: self.follower.current, after_batch=self.after_batch,
            max_batch_size=self.settings.max_batch_size, max_wait_seconds=self.settings.max_batch_wait_ms / 1000,
            inline_max_rows=self.settings.inline_predict_max_rows, arrivals=self.arrivals)
        self.batcher.start()
        self.store.start()
        self.follower.start()
        self.tasks.append(asyncio.get_running_loop().create_task(self._drift_loop(), name="drift"))

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.follower.stop()
        if self.batcher:
            await self.batcher.stop()
        await self.store.stop()

    def _on_swap(self, old: LoadedModel | None, new: LoadedModel) -> None:
        self.model_metrics = metrics.ModelMetrics(new)
        metrics.set_served(self.name, new.version, old.version if old else None)
        if old is not None and old.monitor is not None:
            metrics.clear_drift(self.name, old.monitor.feature_names)
        if new.monitor is not None:
            new.monitor.reset()
            metrics.DRIFT_THRESHOLD.labels(self.name).set(new.monitor.threshold)
        spec = new.spec or {}
        quality = spec.get("quality") or {}
        threshold = (spec.get("metric") or {}).get("threshold")
        if threshold is not None:
            metrics.QUALITY_THRESHOLD.labels(self.name).set(float(threshold))
        self.store.configure(
            ttl_seconds=int(self.settings.feedback_ttl_seconds or quality.get("feedback_ttl_seconds") or 7 * 24 * 3600),
            window_size=int(self.settings.quality_window_size or quality.get("window_size") or 500))

    def after_batch(self, model: LoadedModel, jobs: list[Job], values: list[Any]) -> None:
        if model is self.follower.current and self.model_metrics is not None:
            self.model_metrics.observe_batch(values)
        monitor = model.monitor
        if monitor is not None and (self.settings.drift_sample_rate >= 1
                                    or random.random() < self.settings.drift_sample_rate):
            try:
                rows = jobs[0].rows if len(jobs) == 1 else [r for j in jobs for r in j.rows]
                monitor.observe(rows, values)
            except Exception as exc:  # noqa: BLE001 - drift is advisory: never fail serving because of it
                log.warning("drift monitor could not observe a batch: %s", exc)

    def drift_report(self) -> dict[str, Any] | None:
        model = self.model
        if model is None or model.monitor is None:
            return None
        report = model.monitor.report()
        return {"metric": report.metric, "threshold": report.threshold, "window_samples": report.samples,
                "ready": report.ready, "overall": report.overall, "features": report.features,
                "drifted_features": report.drifted}

    def update_drift_gauges(self) -> None:
        model = self.model
        if model is None or model.monitor is None:
            return
        report = model.monitor.report()
        metrics.DRIFT_WINDOW.labels(self.name).set(report.samples)
        if not report.ready:
            return
        for feature, score in report.features.items():
            metrics.DRIFT_SCORE.labels(self.name, feature).set(score)
        metrics.DRIFT_SCORE.labels(self.name, "overall").set(report.overall)

    async def _drift_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.drift_interval_seconds)
            try:
                self.update_drift_gauges()
                if self.model is not None:
                    await self.store.refresh(self.model.is_classifier)
            except Exception as exc:  # noqa: BLE001 - a background loop must not die
                log.warning("periodic drift/quality update failed: %s", exc)
