"""The predictor's service layer: the followed model, the micro-batcher, drift and feedback bookkeeping, and
what every route does with them (the fast path and the FastAPI routes only move bytes in and out)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

import orjson

from mlops_common.errors import BadRequest, NotFound, Unprocessable
from mlops_common.observability import bind_log_context
from mlops_common.rollout import RolloutSplit, mirrored, to_canary
from predictor import invocations, metrics
from predictor.batching import Arrivals, Job, MicroBatcher, ModelError
from predictor.errors import not_serving
from predictor.feedback import FeedbackStore
from predictor.following import AliasReader, ModelFollower
from predictor.inputs import InputError, check_list
from predictor.loader import ModelLoader
from predictor.loading import DEFAULT_QUALITY, LoadedModel
from predictor.routing import SERVED, Routing, ShadowMirror, publish_split, rollout_key
from predictor.schemas import FeedbackRequest
from predictor.settings import PredictorSettings

if TYPE_CHECKING:
    from predictor.versions import VersionPool

log = logging.getLogger(__name__)


def invalid(exc: InputError) -> Unprocessable:
    return Unprocessable(str(exc), field=exc.field)


class PredictorService:
    """``loader`` and ``aliases`` replace MLflow as the source of versions (tests serve a local model)."""

    def __init__(self, settings: PredictorSettings, loader: ModelLoader | None = None,
                 aliases: AliasReader | None = None) -> None:
        self.settings = settings
        self.name = settings.model_name
        self.arrivals = Arrivals()
        self.follower = ModelFollower(settings, self._on_swap, loader, aliases)
        self.store = FeedbackStore(settings.redis_url, settings.redis_key_prefix, self.name)
        self.batcher: MicroBatcher | None = None
        self.model_metrics: metrics.ModelMetrics | None = None
        self.tasks: list[asyncio.Task[None]] = []
        # Where versions other than production are held (set by the catalog that serves this model).
        self.versions: VersionPool | None = None
        # The rollout split followed (None: production answers everything; see predictor.routing).
        self.rollout: Routing | None = None
        self.split = RolloutSplit()
        self.follower.on_split = self.set_split
        self.shadow = ShadowMirror(self.name, self.store, settings.shadow_queue_size, settings.shadow_workers)
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
        self.shadow.start()
        self.follower.start()
        self.tasks.append(asyncio.get_running_loop().create_task(self._drift_loop(), name="drift"))

    async def predict(self, body: bytes, scope: MutableMapping[str, Any], version: str | None = None) -> bytes:
        """One /predict body scored (by ``version`` when given, else the production version): the JSON answer;
        raises a ``ServiceError`` for every refusal."""
        if version is None:
            model, batcher = (self.follower.current, self.batcher) if self.rollout is None else self.pick(scope)
            if model is None:
                raise not_serving(self.name)
        else:
            if self.versions is None:
                raise NotFound(f"model {self.name!r} serves no version but production")
            model, batcher = await self.versions.acquire(self, version)
        scope[SERVED] = model.version  # the version that answers (or refuses) this request
        request_id = uuid.uuid4().hex
        bind_log_context(request_id=request_id)
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"malformed JSON: {exc}") from None
        if type(payload) is not dict:
            raise Unprocessable('the body must be a JSON object {"instances": [...]}', field="body")
        probabilities = payload.get("probabilities", False)
        try:
            if "instances" not in payload:
                raise InputError("instances", 'missing: send {"instances": [...]}')
            if type(probabilities) is not bool:
                raise InputError("probabilities", "expected a boolean")
            rows = model.inputs.validate(check_list(payload["instances"], self.settings.max_instances))
        except InputError as exc:
            raise invalid(exc) from None
        if probabilities and not model.is_classifier:
            raise Unprocessable("probabilities are only available for classifiers", field="probabilities")
        self.arrivals.queued(scope)
        assert batcher is not None
        try:
            served, values, probs = await batcher.submit(rows, probabilities, model)
        except InputError as exc:
            raise invalid(exc) from None
        except ModelError as exc:
            raise Unprocessable(str(exc)) from None
        self.store.record(request_id, served.version, values, rows)
        scope[SERVED] = served.version
        if self.rollout is not None and version is None:
            self.mirror(rows, request_id, served, values)
        answer: dict[str, Any] = {"predictions": values, "model_name": served.name,
                                  "model_version": served.version, "request_id": request_id}
        if probs is not None:
            answer["probabilities"] = probs
        return orjson.dumps(answer)

    def pick(self, scope: MutableMapping[str, Any] | None) -> tuple[LoadedModel | None, MicroBatcher | None]:
        """The version (and its batcher) that answers a request without an explicit version: the canary for
        the request's share of the split when it is held, else production."""
        rollout = self.rollout
        if rollout is not None and rollout.canary is not None and self.versions is not None \
                and to_canary(rollout.split, rollout_key(scope)):
            held = self.versions.ready(self, rollout.canary)
            if held is not None:
                return held
        return self.follower.current, self.batcher

    def mirror(self, rows: list[Any], request_id: str, served: LoadedModel, values: list[Any]) -> None:
        """Hand a request production answered to the shadow version, when the split's share draws it."""
        rollout = self.rollout
        if (rollout is None or rollout.shadow is None or self.versions is None
                or served is not self.follower.current or not mirrored(rollout.split)):
            return
        held = self.versions.ready(self, rollout.shadow)
        if held is not None and held[0] is not served:
            self.shadow.offer(held[0], rows, request_id, values)

    def set_split(self, split: RolloutSplit) -> None:
        """Follow a new rollout split (the follower calls this when the tag changes); the canary and shadow
        versions start loading at once."""
        publish_split(self.name, split, self.split)
        self.split, self.rollout = split, Routing.of(split)
        if self.rollout is not None and self.versions is not None:
            for version in (self.rollout.canary, self.rollout.shadow):
                if version is not None:
                    self.versions.prepare(self, version)

    async def invocations(self, body: bytes, content_type: str, scope: MutableMapping[str, Any] | None) -> bytes:
        """One /invocations request (MLflow's scoring protocol): the JSON answer, or a ``ServiceError``."""
        return await invocations.handle(self, self.settings, body, content_type, scope)

    async def feedback(self, body: FeedbackRequest) -> dict[str, Any]:
        model = self.follower.current
        if model is None:
            raise not_serving(self.name)
        if (body.label is None) == (body.value is None):
            raise Unprocessable("send exactly one of 'label' (classification) or 'value' (regression)")
        return await self.store.submit(body.request_id, body.label, body.value, body.index, model.is_classifier)

    def readiness(self) -> tuple[dict[str, str], dict[str, Any]]:
        """What keeps the predictor from being ready (nothing served yet), and the served version."""
        model = self.follower.current
        if model is None:
            return {"model": not_serving(self.name).detail}, {"model_name": self.name}
        return {}, {"model_name": model.name, "model_version": model.version}

    def describe(self) -> dict[str, Any]:
        """The served version and how following the registry goes (``GET /model``)."""
        model = self.follower.current
        status = self.follower.status
        body: dict[str, Any] = model.describe() if model else {"model_name": self.name, "model_version": None}
        body.update(
            serving=model is not None,
            alias_version=status.alias_version,
            previous_version=self.follower.previous.version if self.follower.previous else None,
            standby_version=status.standby_version,
            rollout=status.rollout.model_dump(),
            reloads=status.reloads,
            failed_versions=status.failed_versions,
            last_swap=status.last_swap,
            events_connected=status.events_connected,
            last_error=status.last_error,
            drift=self.drift_report(),
        )
        return body

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.follower.stop()
        await self.shadow.stop()
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
        spec = new.spec
        if spec is not None and spec.threshold is not None:
            metrics.QUALITY_THRESHOLD.labels(self.name).set(spec.threshold)
        self.store.configure(
            ttl_seconds=self.settings.feedback_ttl_seconds or (
                spec.feedback_ttl_seconds if spec else DEFAULT_QUALITY.feedback_ttl_seconds),
            window_size=self.settings.quality_window_size or (
                spec.quality_window_size if spec else DEFAULT_QUALITY.window_size))

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
        bind_log_context(model=self.name)  # this task's own context
        while True:
            await asyncio.sleep(self.settings.drift_interval_seconds)
            try:
                self.update_drift_gauges()
                if self.model is not None:
                    rollout = self.rollout
                    others = (rollout.canary, rollout.shadow) if rollout is not None else ()
                    await self.store.refresh(self.model.is_classifier,
                                             (self.model.version, *(v for v in others if v is not None)))
            except Exception as exc:  # noqa: BLE001 - a background loop must not die
                log.warning("periodic drift/quality update failed: %s", exc)
