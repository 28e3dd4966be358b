"""The retrain job as Celery tasks.

``run_job`` loads, snapshots and validates the data, notes the current production version, then starts a
chord: ``train_challenger`` (candidates → best → log → register) and ``evaluate_production`` (the current
production version on the same test split) run in parallel, and ``decide`` applies the gate and calls
registry-proxy. Every task is idempotent per job, so a redelivered message (after a worker crash) never
trains a finished step again nor registers a second version.
"""

from __future__ import annotations

import logging
import traceback
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import mlflow
from celery import chord
from celery.exceptions import Retry

from mlops_common import mlflow_utils
from mlops_common.spec import ModelSpec
from trainer import gate, metrics, training
from trainer.candidates import SpecError
from trainer.celery_app import app
from trainer.datasets import DatasetError, DatasetStore, Snapshot
from trainer.evaluation import score_all
from trainer.jobs import TERMINAL, JobStore, connect, now_iso
from trainer.lineage import mlflow_restorer
from trainer.preparation import Prepared, ValidationFailed, prepare
from trainer.settings import get_settings

log = logging.getLogger(__name__)
USER_ERRORS = (DatasetError, ValidationFailed, SpecError)
# registry-proxy down: the gate call is retried for GATE_RETRIES × GATE_RETRY_SECONDS before the job fails.
GATE_RETRIES = 20
GATE_RETRY_SECONDS = 15


class Context:
    """Per-process connections, created lazily (after the worker forks)."""

    settings = get_settings()

    @cached_property
    def store(self) -> JobStore:
        return JobStore(connect(self.settings.redis_url), self.settings.job_ttl_seconds)

    @cached_property
    def datasets(self) -> DatasetStore:
        s = self.settings
        return DatasetStore(s.datasets_dir, s.allowed_data_roots, s.max_upload_bytes, s.http_timeout_seconds,
                            restore=mlflow_restorer(s.mlflow_tracking_uri))

    @cached_property
    def client(self):  # noqa: ANN201
        return mlflow_utils.client(self.settings.mlflow_tracking_uri)


ctx = Context()


def _spec(job: dict[str, Any]) -> ModelSpec:
    return ModelSpec.model_validate(job["spec"])


def _snapshot(job: dict[str, Any]) -> Snapshot:
    snap = ctx.datasets.find(job["dataset"]["sha256"])
    if snap is None:
        raise DatasetError(f"the snapshot {job['dataset']['sha256']} is gone from {ctx.settings.datasets_dir}")
    return snap


def _prepared(job: dict[str, Any]) -> tuple[ModelSpec, Snapshot, Any, Prepared]:
    spec, snap = _spec(job), _snapshot(job)
    frame = ctx.datasets.load(snap)
    return spec, snap, frame, prepare(spec, frame, ctx.settings.min_rows)


def _seconds_since(iso: str | None) -> float | None:
    if not iso:
        return None
    return (datetime.now(UTC) - datetime.fromisoformat(iso)).total_seconds()


def fail(job_id: str, error: str) -> None:
    job = ctx.store.raw(job_id) or {}
    if job.get("status") in TERMINAL:
        return
    log.warning("job %s failed: %s", job_id, error)
    run_id = job.get("run_id")
    if run_id:  # MLflow first: whoever sees the job failed finds its run failed too
        try:
            ctx.client.set_tag(run_id, "mlops.error", error[:5000])
            ctx.client.set_terminated(run_id, "FAILED")
        except Exception:  # noqa: BLE001
            log.exception("could not mark run %s failed", run_id)
    ctx.store.update(job_id, status="failed", stage="failed", error=error, finished_at=now_iso())
    metrics.record_job(ctx.store.r, job.get("model_name", "?"), "failed", _seconds_since(job.get("started_at")))


def _internal(exc: Exception) -> str:
    log.error("unexpected error: %s", traceback.format_exc())
    return f"internal error: {type(exc).__name__}: {exc}"


@app.task(name="trainer.run_job")
def run_job(job_id: str) -> None:
    job = ctx.store.raw(job_id)
    if job is None or job["status"] in TERMINAL or job.get("dispatched"):
        return
    ctx.store.update(job_id, status="running", stage="loading", progress=0.02,
                     started_at=job.get("started_at") or now_iso())
    try:
        spec = _spec(job)
        snap = ctx.datasets.snapshot(spec.data.uri)
        dataset = {"dataset_id": snap.dataset_id, "sha256": snap.sha256, "source": snap.source, "rows": snap.rows,
                   "format": snap.format}
        ctx.store.stage(job_id, "validating", 0.08, dataset=dataset)
        prep = prepare(spec, ctx.datasets.load(snap), ctx.settings.min_rows)
        ctx.store.stage(job_id, "splitting", 0.12, dataset={**dataset, **prep.counts, "dropped": prep.dropped})
        production = mlflow_utils.version_by_alias(ctx.client, spec.name, mlflow_utils.PRODUCTION)
    except USER_ERRORS as exc:
        fail(job_id, str(exc))
        return
    except Exception as exc:  # noqa: BLE001
        fail(job_id, _internal(exc))
        return
    if not ctx.store.r.hsetnx(JobStore.key(job_id), "dispatched", b"true"):
        return
    ctx.store.stage(job_id, "training", 0.15, production_version=production.version if production else None)
    chord([train_challenger.si(job_id), evaluate_production.si(job_id)], decide.si(job_id)).apply_async()


def _existing_version(name: str, job_id: str) -> Any | None:
    try:
        versions = ctx.client.search_model_versions(f"name = '{name}'")
    except Exception as exc:  # noqa: BLE001
        if mlflow_utils.is_not_found(exc):
            return None
        raise
    for mv in versions:
        if (mv.tags or {}).get(training.JOB_TAG) == job_id:
            return mv
    return None


def _restore_from_version(job_id: str, mv: Any) -> None:
    run = ctx.client.get_run(mv.run_id)
    test = {k[len("test_"):]: v for k, v in run.data.metrics.items() if k.startswith("test_")}
    ctx.store.update(job_id, run_id=mv.run_id, model_version=str(mv.version), challenger_metrics=test,
                     best_candidate=run.data.tags.get("mlops.best_candidate"), challenger_done=True)


@app.task(name="trainer.train_challenger", bind=True, max_retries=60)
def train_challenger(self, job_id: str) -> None:
    job = ctx.store.raw(job_id)
    if job is None or job["status"] in TERMINAL or job.get("challenger_done"):
        return
    try:
        spec, snap, frame, prep = _prepared(job)
        existing = _existing_version(spec.name, job_id)
        if existing is not None:  # a crashed delivery registered it already
            _restore_from_version(job_id, existing)
            return
        exp_id = training.experiment_id(ctx.client, spec.name)
        run_id = job.get("run_id")
        if run_id:
            killed = training.kill_leftover_children(ctx.client, exp_id, run_id)
            log.info("job %s resumes run %s (%d leftover candidate runs marked KILLED)", job_id, run_id, killed)
            active = mlflow.start_run(run_id=run_id)
        else:
            active = mlflow.start_run(experiment_id=exp_id, run_name=f"retrain-{job_id[:8]}",
                                      tags={training.JOB_TAG: job_id, "mlops.model_name": spec.name})
            run_id = active.info.run_id
            ctx.store.update(job_id, run_id=run_id)
        with active:
            ctx.store.stage(job_id, "training", 0.2)

            def on_done(done: int, total: int, result: training.TrialResult) -> None:
                ctx.store.stage(job_id, f"training candidates ({done}/{total})", 0.2 + 0.55 * done / total)

            results = training.train_all(spec, prep, ctx.client, exp_id, run_id, job_id,
                                         ctx.settings.parallelism, on_done)
            public = [r.public() for r in results]
            metrics.record_candidates(ctx.store.r, spec.name,
                                      {r.label: r.score for r in results if r.score is not None})
            best = training.best_of(spec, results)
            if best is None:
                errors = "; ".join(f"{r.label}: {r.error}" for r in results)
                ctx.store.update(job_id, candidates=public)
                mlflow.end_run("FAILED")
                fail(job_id, f"all {len(results)} candidates failed: {errors}")
                return
            ctx.store.stage(job_id, "evaluating challenger", 0.8, candidates=public, best_candidate=best.label)
            test_metrics, info = training.log_parent(spec, prep, best, results, snap, frame, job_id,
                                                     ctx.settings.log_dataset_max_bytes)
            ctx.store.stage(job_id, "registering", 0.88)
            version = _register(self, spec, job_id, run_id, info, snap)
        ctx.store.update(job_id, model_version=version, challenger_metrics=test_metrics, challenger_done=True,
                         stage="challenger registered", progress=0.9)
    except Retry:
        raise
    except USER_ERRORS as exc:
        fail(job_id, str(exc))
    except Exception as exc:  # noqa: BLE001
        fail(job_id, _internal(exc))


def _register(task: Any, spec: ModelSpec, job_id: str, run_id: str, info: Any, snap: Snapshot) -> str:
    if not ctx.store.claim(job_id, "register", ttl=600):
        raise task.retry(countdown=10)
    try:
        existing = _existing_version(spec.name, job_id)
        if existing is not None:
            return str(existing.version)
        mv = mlflow.register_model(info.model_uri, spec.name, tags={
            training.JOB_TAG: job_id, "mlops.run_id": run_id, "mlops.dataset_sha256": snap.sha256})
        return str(mv.version)
    finally:
        ctx.store.release(job_id, "register")


@app.task(name="trainer.evaluate_production")
def evaluate_production(job_id: str) -> None:
    job = ctx.store.raw(job_id)
    if job is None or job["status"] in TERMINAL or job.get("production_done"):
        return
    version = job.get("production_version")
    if version is None:
        ctx.store.update(job_id, production_metrics=None, production_done=True)
        return
    try:
        spec, _snap, _frame, prep = _prepared(job)
        model = mlflow.sklearn.load_model(mlflow_utils.model_uri(spec.name, version))
        predictions = model.predict(training.predict_frame(prep, prep.X_test))
        scores = score_all(spec.task, prep.y_test, predictions)
        ctx.store.update(job_id, production_metrics=scores, production_done=True)
    except Exception as exc:  # noqa: BLE001 - the gate then asks a human
        log.warning("job %s: production v%s could not be evaluated: %s", job_id, version, exc)
        ctx.store.update(job_id, production_metrics=None, production_error=f"{type(exc).__name__}: {exc}",
                         production_done=True)


@app.task(name="trainer.decide", bind=True, max_retries=720)
def decide(self, job_id: str) -> None:
    job = ctx.store.raw(job_id)
    if job is None or job["status"] in TERMINAL:
        return
    if not job.get("challenger_done") or not job.get("production_done"):
        raise self.retry(countdown=5)  # a duplicate delivery completed the chord early
    if not ctx.store.claim(job_id, "decide", ttl=300):
        raise self.retry(countdown=5)
    try:
        spec = _spec(job)
        metric = spec.metric
        assert metric is not None
        challenger = float(job["challenger_metrics"][metric.name])
        production_version = job.get("production_version")
        production = (job.get("production_metrics") or {}).get(metric.name)
        outcome, reason = gate.decide(metric, challenger, production, production_version)
        ctx.store.stage(job_id, "gating", 0.95, decision=outcome, reason=reason)
        payload = {
            "version": job["model_version"], "job_id": job_id, "run_id": job["run_id"],
            "metric": {"name": metric.name, "higher_is_better": metric.higher_is_better,
                       "threshold": metric.threshold, "margin": metric.margin},
            "challenger_score": challenger, "production_version": production_version,
            "production_score": production, "outcome": outcome, "reason": reason,
            "dataset_digest": job["dataset"]["sha256"], "requested_at": job["created_at"],
        }
        answer = gate.call_registry(ctx.settings.registry_url, ctx.settings.registry_service_token, spec.name,
                                    payload, timeout=ctx.settings.http_timeout_seconds)
        decision = answer.get("outcome") or outcome
        ctx.store.update(job_id, status="succeeded", stage="done", progress=1.0, decision=decision,
                         decision_id=answer.get("decision_id"), finished_at=now_iso())
        metrics.record_decision(ctx.store.r, spec.name, decision)
        metrics.record_job(ctx.store.r, spec.name, "succeeded", _seconds_since(job.get("started_at")))
    except gate.RegistryError as exc:
        if exc.transient and self.request.retries < GATE_RETRIES:
            ctx.store.stage(job_id, "gating (registry-proxy unreachable, retrying)", 0.95, reason=str(exc))
            ctx.store.release(job_id, "decide")
            raise self.retry(countdown=GATE_RETRY_SECONDS, max_retries=None) from exc
        fail(job_id, f"model version {job.get('model_version')} is registered (alias challenger not set) but "
                     f"the gate call failed: {exc}")
    except Exception as exc:  # noqa: BLE001
        fail(job_id, _internal(exc))
    finally:
        ctx.store.release(job_id, "decide")


@app.task(name="trainer.schedule_tick")
def schedule_tick() -> list[str]:
    from trainer.schedule import due_retrains

    return due_retrains(ctx.settings, ctx.store, ctx.datasets)
