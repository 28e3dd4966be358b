"""The retrain job as Celery tasks.

``run_job`` loads, snapshots and validates the data, notes the current production version and the model's
pinned golden set (asked of registry-proxy), then starts a chord: ``train_challenger`` (candidates → best →
log the model in the run → snapshot the test split → score the golden set) and ``evaluate_production`` (the
current production version on the same test split and on the golden set) run in parallel, and ``decide``
sends the scores to registry-proxy's gate, which registers the version, applies the policy it owns and
answers with the outcome. Every task is idempotent per job, so a redelivered message (after a worker crash)
never trains a finished step again; the gate call is idempotent per job in registry-proxy, so a job gets one
version.
"""

from __future__ import annotations

import logging
import math
import traceback
from datetime import UTC, datetime
from typing import Any

import mlflow
import pandas as pd
from celery import chord
from mlflow.entities import Metric
from pydantic import ValidationError

from mlops_common import mlflow_utils
from mlops_common.contracts import GateOutcome, GateRequest, GoldenScores
from mlops_common.names import PRODUCTION_ALIAS, Tag
from mlops_common.observability import bind_log_context
from mlops_common.spec import ModelSpec
from trainer import gate, training
from trainer.candidates import SpecError
from trainer.celery_app import app
from trainer.context import worker_context
from trainer.datasets import DatasetError, Snapshot
from trainer.evaluation import score_all
from trainer.jobs import TERMINAL, now_iso
from trainer.preparation import Prepared, ValidationFailed, features_and_target, prepare, raw_test_rows
from trainer.schedule import due_retrains
from trainer.submission import RUN_JOB

log = logging.getLogger(__name__)
USER_ERRORS = (DatasetError, ValidationFailed, SpecError)
# registry-proxy down: the gate call is retried for GATE_RETRIES × GATE_RETRY_SECONDS before the job fails.
GATE_RETRIES = 20
GATE_RETRY_SECONDS = 15
GOLDEN_TIMEOUT_SECONDS = 10


def _spec(job: dict[str, Any]) -> ModelSpec:
    """The job's spec; from here on the task's log lines name the model."""
    spec = ModelSpec.model_validate(job["spec"])
    bind_log_context(model=spec.name)
    return spec


def _snapshot(job: dict[str, Any]) -> Snapshot:
    ctx = worker_context()
    snap = ctx.datasets.find(job["dataset"]["sha256"])
    if snap is None:
        raise DatasetError(f"the snapshot {job['dataset']['sha256']} is gone from {ctx.settings.datasets_dir}")
    return snap


def _prepared(job: dict[str, Any]) -> tuple[ModelSpec, Snapshot, pd.DataFrame, Prepared]:
    ctx = worker_context()
    spec, snap = _spec(job), _snapshot(job)
    frame = ctx.datasets.load(snap)
    return spec, snap, frame, prepare(spec, frame, ctx.settings.min_rows)


def _seconds_since(iso: str | None) -> float | None:
    if not iso:
        return None
    return (datetime.now(UTC) - datetime.fromisoformat(iso)).total_seconds()


def fail(job_id: str, error: str) -> None:
    ctx = worker_context()
    job = ctx.store.raw(job_id) or {}
    if job.get("status") in TERMINAL:
        return
    log.warning("job %s failed: %s", job_id, error)
    run_id = job.get("run_id")
    if run_id:  # MLflow first: whoever sees the job failed finds its run failed too
        try:
            ctx.mlflow.set_tag(run_id, Tag.ERROR, error[:5000])
            ctx.mlflow.set_terminated(run_id, "FAILED")
        except Exception:
            log.exception("could not mark run %s failed", run_id)
    ctx.store.update(job_id, status="failed", stage="failed", error=error, finished_at=now_iso())
    ctx.store.record_job(job.get("model_name", "?"), "failed", _seconds_since(job.get("started_at")))


def _internal(exc: Exception) -> str:
    log.error("unexpected error: %s", traceback.format_exc())
    return f"internal error: {type(exc).__name__}: {exc}"


def _pinned_golden_set(job_id: str, model_name: str) -> dict[str, Any]:
    """The job fields of the model's golden set: ``golden_sha256`` when one is pinned (a proposed one is not
    used). registry-proxy unreachable: the job goes on without it (registry-proxy then refuses to promote
    if one is pinned) and says so in ``golden_lookup_error``."""
    ctx = worker_context()
    s = ctx.settings
    try:
        found = gate.golden_set(s.registry_url, s.registry_service_token, model_name,
                                timeout=min(s.http_timeout_seconds, GOLDEN_TIMEOUT_SECONDS))
    except gate.RegistryError as exc:
        log.warning("job %s: no golden set (could not ask registry-proxy): %s", job_id, exc)
        return {"golden_sha256": None, "golden_lookup_error": str(exc)[:500]}
    pinned = found["sha256"] if found is not None and found.get("status") == "pinned" else None
    return {"golden_sha256": pinned, "golden_lookup_error": None}


@app.task(name=RUN_JOB)
def run_job(job_id: str) -> None:
    ctx = worker_context()
    job = ctx.store.raw(job_id)
    if job is None or job["status"] in TERMINAL or job.get("dispatched"):
        return
    ctx.store.update(job_id, status="running", stage="loading", progress=0.02,
                     started_at=job.get("started_at") or now_iso())
    try:
        spec = _spec(job)
        snap = ctx.datasets.snapshot(spec.data.uri, spec)
        dataset = {"dataset_id": snap.dataset_id, "sha256": snap.sha256, "source": snap.source, "rows": snap.rows,
                   "format": snap.format, **({"lineage": snap.lineage} if snap.lineage else {})}
        ctx.store.stage(job_id, "validating", 0.08, dataset=dataset)
        prep = prepare(spec, ctx.datasets.load(snap), ctx.settings.min_rows)
        ctx.store.stage(job_id, "splitting", 0.12, dataset={**dataset, **prep.counts, "dropped": prep.dropped})
        production = mlflow_utils.version_by_alias(ctx.mlflow, spec.name, PRODUCTION_ALIAS)
        golden = _pinned_golden_set(job_id, spec.name)
    except USER_ERRORS as exc:
        fail(job_id, str(exc))
        return
    except Exception as exc:  # noqa: BLE001 - any other failure fails the job, reported as internal
        fail(job_id, _internal(exc))
        return
    if not ctx.store.mark_dispatched(job_id):
        return
    ctx.store.stage(job_id, "training", 0.15, production_version=production.version if production else None,
                    **golden)
    chord([train_challenger.si(job_id), evaluate_production.si(job_id)], decide.si(job_id)).apply_async()


def _golden_frame(sha: str) -> pd.DataFrame:
    ctx = worker_context()
    snap = ctx.datasets.find(sha)
    if snap is None:
        raise DatasetError(f"the golden set snapshot {sha} is neither in {ctx.settings.datasets_dir} nor in "
                           "any MLflow run")
    return ctx.datasets.load(snap)


def _golden_scores(job: dict[str, Any], spec: ModelSpec, model: Any, who: str
                   ) -> tuple[dict[str, float] | None, str | None]:
    """``model`` scored on the job's pinned golden set with every metric of the task: (scores, None), or
    (None, why not); (None, None) when the job has no golden set."""
    sha = job.get("golden_sha256")
    if not sha:
        return None, None
    try:
        X, y, _dropped = features_and_target(spec, _golden_frame(sha))
        return score_all(spec.task, y, model.predict(X)), None
    except Exception as exc:  # noqa: BLE001 - sent as the golden block's error: registry-proxy asks a human
        log.warning("job %s: the %s could not be scored on the golden set %s: %s", job["job_id"], who, sha, exc)
        error = str(exc) if isinstance(exc, USER_ERRORS) else f"{type(exc).__name__}: {exc}"
        return None, error[:900]


def _save_test_split(job_id: str, snap: Snapshot, frame: pd.DataFrame, prep: Prepared
                     ) -> tuple[dict[str, Any] | None, str | None]:
    """The job's test split (the dataset's original columns, the split's rows) as a content-addressed
    snapshot: ({"sha256", "rows"}, None), or (None, why not)."""
    ctx = worker_context()
    try:
        data = raw_test_rows(frame, prep).to_csv(index=False).encode()
        saved = ctx.datasets.ingest_stream(iter([data]), source=f"test split of job {job_id} (dataset {snap.sha256})",
                                           name="test-split.csv")
        return {"sha256": saved.sha256, "rows": saved.rows}, None
    except Exception as exc:  # noqa: BLE001 - only a golden-set proposal depends on it
        log.warning("job %s: could not snapshot the test split: %s", job_id, exc)
        return None, f"{type(exc).__name__}: {exc}"


def _log_to_run(run_id: str, test_split: dict[str, Any] | None, golden_sha: str | None,
                golden: dict[str, float] | None) -> None:
    """The gate's inputs in the parent run too (best effort): the test split's sha256, the golden scores."""
    ctx = worker_context()
    try:
        if test_split is not None:
            ctx.mlflow.set_tag(run_id, Tag.TEST_SPLIT_SHA256, test_split["sha256"])
            split = ctx.datasets.get(test_split["sha256"])
            if split is not None and split.size_bytes <= ctx.settings.log_dataset_max_bytes:
                ctx.mlflow.log_artifact(run_id, split.path, "test_split")
        if golden_sha:
            ctx.mlflow.set_tag(run_id, Tag.GOLDEN_SHA256, golden_sha)
        if golden:
            stamp = int(datetime.now(UTC).timestamp() * 1000)
            ctx.mlflow.log_batch(run_id, metrics=[Metric(f"golden_{k}", v, stamp, 0) for k, v in golden.items()
                                                  if math.isfinite(v)])
    except Exception:
        log.exception("could not log the gate inputs to run %s", run_id)


def _finish_challenger(job_id: str, job: dict[str, Any], spec: ModelSpec, snap: Snapshot, frame: pd.DataFrame,
                       prep: Prepared, model: Any, run_id: str) -> None:
    ctx = worker_context()
    ctx.store.stage(job_id, "scoring challenger", 0.85)
    test_split, split_error = _save_test_split(job_id, snap, frame, prep)
    golden, golden_error = _golden_scores(job, spec, model, "challenger")
    _log_to_run(run_id, test_split, job.get("golden_sha256"), golden)
    ctx.store.update(job_id, test_split=test_split, test_split_error=split_error, challenger_golden=golden,
                     challenger_golden_error=golden_error, challenger_done=True, stage="challenger logged",
                     progress=0.9)


@app.task(name="trainer.train_challenger", bind=True, max_retries=60)
def train_challenger(self, job_id: str) -> None:
    ctx = worker_context()
    job = ctx.store.raw(job_id)
    if job is None or job["status"] in TERMINAL or job.get("challenger_done"):
        return
    try:
        spec, snap, frame, prep = _prepared(job)
        if job.get("model_uri") and job.get("challenger_metrics") is not None:
            # A crashed delivery logged the model already: no training again, only the steps after it.
            log.info("job %s: model already logged at %s; finishing without training", job_id, job["model_uri"])
            model = mlflow.sklearn.load_model(job["model_uri"])
            _finish_challenger(job_id, job, spec, snap, frame, prep, model, job["run_id"])
            return
        exp_id = training.experiment_id(ctx.mlflow, spec.name)
        run_id = job.get("run_id")
        if run_id:
            killed = training.kill_leftover_children(ctx.mlflow, exp_id, run_id)
            log.info("job %s resumes run %s (%d leftover candidate runs marked KILLED)", job_id, run_id, killed)
            active = mlflow.start_run(run_id=run_id)
        else:
            active = mlflow.start_run(experiment_id=exp_id, run_name=f"retrain-{job_id[:8]}",
                                      tags={Tag.JOB_ID: job_id, Tag.MODEL_NAME: spec.name})
            run_id = active.info.run_id
            ctx.store.update(job_id, run_id=run_id)
        with active:
            ctx.store.stage(job_id, "training", 0.2)

            def on_done(done: int, total: int, result: training.TrialResult) -> None:
                ctx.store.stage(job_id, f"training candidates ({done}/{total})", 0.2 + 0.55 * done / total)

            results = training.train_all(spec, prep, ctx.mlflow, exp_id, run_id, job_id,
                                         ctx.settings.parallelism, on_done)
            public = [r.public() for r in results]
            ctx.store.record_candidates(spec.name, {r.label: r.score for r in results if r.score is not None})
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
            # From here a redelivery never trains again: the model is logged in the run.
            ctx.store.update(job_id, model_uri=info.model_uri, challenger_metrics=test_metrics)
            _finish_challenger(job_id, job, spec, snap, frame, prep, best.pipeline, run_id)
    except USER_ERRORS as exc:
        fail(job_id, str(exc))
    except Exception as exc:  # noqa: BLE001 - any other failure fails the job, reported as internal
        fail(job_id, _internal(exc))


@app.task(name="trainer.evaluate_production")
def evaluate_production(job_id: str) -> None:
    ctx = worker_context()
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
    except Exception as exc:  # noqa: BLE001 - the gate then asks a human
        log.warning("job %s: production v%s could not be loaded: %s", job_id, version, exc)
        error = f"{type(exc).__name__}: {exc}"
        ctx.store.update(job_id, production_metrics=None, production_error=error, production_golden=None,
                         production_golden_error=(f"production v{version} could not be loaded: {error}"[:900]
                                                  if job.get("golden_sha256") else None),
                         production_done=True)
        return
    fields: dict[str, Any] = {"production_metrics": None}
    try:
        predictions = model.predict(training.predict_frame(prep, prep.X_test))
        fields["production_metrics"] = score_all(spec.task, prep.y_test, predictions)
    except Exception as exc:  # noqa: BLE001 - the gate then asks a human
        log.warning("job %s: production v%s could not be evaluated: %s", job_id, version, exc)
        fields["production_error"] = f"{type(exc).__name__}: {exc}"
    golden, golden_error = _golden_scores(job, spec, model, f"production v{version}")
    ctx.store.update(job_id, **fields, production_golden=golden, production_golden_error=golden_error,
                     production_done=True)


def _finite(scores: dict[str, Any] | None) -> dict[str, float] | None:
    """Scores without NaN/infinity (a metric undefined on a split is left out rather than sent)."""
    if scores is None:
        return None
    return {k: float(v) for k, v in scores.items() if v is not None and math.isfinite(float(v))}


def golden_block(job: dict[str, Any]) -> GoldenScores | None:
    sha = job.get("golden_sha256")
    if not sha:
        return None
    errors = [f"{who}: {job[key]}" for who, key in (("challenger", "challenger_golden_error"),
                                                     ("production", "production_golden_error")) if job.get(key)]
    return GoldenScores(sha256=sha, challenger=_finite(job.get("challenger_golden")),
                        production=_finite(job.get("production_golden")),
                        error="; ".join(errors)[:2000] or None)


def gate_request(job: dict[str, Any], spec: ModelSpec) -> GateRequest:
    """The job's report to registry-proxy's gate: scores, never an outcome to trust."""
    challenger = _finite(job["challenger_metrics"]) or {}
    production_version = job.get("production_version")
    production = _finite(job.get("production_metrics"))
    trainer_outcome = None
    metric = spec.metric
    if metric is not None and metric.name in challenger:
        reading = gate.preview(metric, challenger[metric.name], (production or {}).get(metric.name),
                               production_version)
        trainer_outcome = reading[0] if reading else None
    try:  # the spec's metric block: seeds the policy of a model registry-proxy never gated (else ignored)
        spec_policy = gate.policy_of(metric) if metric is not None else None
    except ValidationError:
        spec_policy = None
    split = job.get("test_split") or {}
    requested_by = job.get("requested_by")
    return GateRequest(
        job_id=job["job_id"], run_id=job["run_id"], model_uri=job["model_uri"],
        requested_by=str(requested_by)[:64] if requested_by else None, requested_at=job.get("created_at"),
        challenger_metrics=challenger, production_version=production_version, production_metrics=production,
        production_error=str(job["production_error"])[:2000] if job.get("production_error") else None,
        golden=golden_block(job), dataset_digest=(job.get("dataset") or {}).get("sha256"),
        test_split_sha256=split.get("sha256"), test_split_rows=split.get("rows"), spec_policy=spec_policy,
        trainer_outcome=trainer_outcome,
    )


@app.task(name="trainer.decide", bind=True, max_retries=720)
def decide(self, job_id: str) -> None:
    ctx = worker_context()
    job = ctx.store.raw(job_id)
    if job is None or job["status"] in TERMINAL:
        return
    if not job.get("challenger_done") or not job.get("production_done"):
        raise self.retry(countdown=5)  # a duplicate delivery completed the chord early
    if not ctx.store.claim(job_id, "decide", ttl=300):
        raise self.retry(countdown=5)
    try:
        spec = _spec(job)
        request = gate_request(job, spec)
        ctx.store.stage(job_id, "gating", 0.95, trainer_outcome=request.trainer_outcome)
        answer = gate.call_registry(ctx.settings.registry_url, ctx.settings.registry_service_token, spec.name,
                                    request.model_dump(mode="json"), timeout=ctx.settings.http_timeout_seconds)
        try:
            outcome = GateOutcome.model_validate(answer)
        except ValidationError as exc:
            raise gate.RegistryError(f"registry-proxy answered an unreadable gate outcome: {exc}",
                                     transient=False) from exc
        bind_log_context(version=outcome.version)
        ctx.store.update(job_id, status="succeeded", stage="done", progress=1.0, model_version=outcome.version,
                         decision=outcome.outcome, decision_id=outcome.decision_id, reason=outcome.reason,
                         policy=outcome.policy.model_dump(mode="json"), finished_at=now_iso())
        ctx.store.record_decision(spec.name, outcome.outcome)
        ctx.store.record_job(spec.name, "succeeded", _seconds_since(job.get("started_at")))
    except gate.RegistryError as exc:
        if exc.transient and self.request.retries < GATE_RETRIES:
            ctx.store.stage(job_id, "gating (registry-proxy unreachable, retrying)", 0.95, reason=str(exc))
            ctx.store.release(job_id, "decide")
            raise self.retry(countdown=GATE_RETRY_SECONDS, max_retries=None) from exc
        fail(job_id, f"the gate call failed (the model is logged at {job.get('model_uri')} in run "
                     f"{job.get('run_id')}): {exc}")
    except Exception as exc:  # noqa: BLE001 - any other failure fails the job, reported as internal
        fail(job_id, _internal(exc))
    finally:
        ctx.store.release(job_id, "decide")


@app.task(name="trainer.schedule_tick")
def schedule_tick() -> list[str]:
    ctx = worker_context()
    return due_retrains(ctx.settings, ctx.store, ctx.datasets)
