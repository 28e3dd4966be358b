"""Train the candidates as nested MLflow runs under one parent run, pick the best and log it in the parent run
(registry-proxy registers it as a version when the gate is called)."""

from __future__ import annotations

import ast
import importlib.util
import itertools
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.data.pandas_dataset import from_pandas
from mlflow.entities import Metric, Param
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient
from sklearn.pipeline import Pipeline
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from mlops_common.names import REFERENCE_STATS_ARTIFACT, SPEC_ARTIFACT, TEXT_CLASSIFICATION, Tag
from mlops_common.settings import REPO_ROOT
from mlops_common.spec import Candidate, ModelSpec
from trainer import __version__
from trainer.candidates import build
from trainer.datasets import Snapshot
from trainer.evaluation import METRICS, confusion_figure, residual_figure, score_all
from trainer.preparation import Prepared

log = logging.getLogger(__name__)
GRID_STEPS = {"featurizer": "features", "estimator": "model"}
# The project package whose modules a pipeline is built of (featurizers); they are shipped inside the model.
SHIPPED_PACKAGE = "mlops_common"


@dataclass
class Trial:
    label: str
    index: int
    candidate: Candidate
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrialResult:
    label: str
    status: str
    run_id: str | None = None
    score: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None
    pipeline: Pipeline | None = None

    def public(self) -> dict[str, Any]:
        return {"candidate": self.label, "status": self.status, "run_id": self.run_id, "score": self.score,
                "seconds": round(self.seconds, 3), "error": self.error}


class _NotCreated(Exception):
    """The experiment could not be created, most likely because another worker just did."""


def experiment_id(client: MlflowClient, model_name: str) -> str:
    """The model's experiment, created on first use; when creating it fails (another worker created it at the
    same moment) it is looked up again, three attempts in all."""
    name = f"model:{model_name}"

    def get_or_create() -> str:
        found = client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        try:
            return str(client.create_experiment(name, tags={Tag.MODEL_NAME: model_name}))
        except Exception as exc:
            raise _NotCreated(name) from exc

    retrying = Retrying(stop=stop_after_attempt(3), wait=wait_exponential_jitter(initial=0.2, max=1, jitter=0.2),
                        retry=retry_if_exception_type(_NotCreated), reraise=True)
    try:
        return retrying(get_or_create)
    except _NotCreated as exc:
        raise RuntimeError(f"could not create the MLflow experiment {name!r}") from exc.__cause__


def code_version_tags() -> dict[str, str]:
    tags = {Tag.CODE_VERSION: __version__}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        if commit:
            tags["mlflow.source.git.commit"] = commit
            tags[Tag.CODE_VERSION] = commit
    except (OSError, subprocess.SubprocessError):
        pass
    return tags


def trials(spec: ModelSpec) -> list[Trial]:
    out: list[Trial] = []
    for i, cand in enumerate(spec.candidates or []):
        if not cand.grid:
            out.append(Trial(cand.label, i, cand))
            continue
        keys = sorted(cand.grid)
        for combo in itertools.product(*(cand.grid[k] for k in keys)):
            overrides = dict(zip(keys, combo, strict=True))
            suffix = ",".join(f"{k.split('__', 1)[1]}={v}" for k, v in overrides.items())
            out.append(Trial(f"{cand.label}[{suffix}]", i, cand, overrides))
    return out


def _flat_params(trial: Trial) -> dict[str, str]:
    params: dict[str, Any] = {"candidate": trial.label}
    cand = trial.candidate
    if cand.featurizer:
        params["featurizer"] = cand.featurizer.type
        params.update({f"featurizer.{k}": v for k, v in cand.featurizer.params.items()})
    params["estimator"] = cand.estimator.type
    params.update({f"estimator.{k}": v for k, v in cand.estimator.params.items()})
    params.update({k.replace("__", "."): v for k, v in trial.overrides.items()})
    return {k: str(v)[:500] for k, v in params.items()}


def train_trial(spec: ModelSpec, prep: Prepared, trial: Trial, client: MlflowClient, exp_id: str,
                parent_run_id: str, job_id: str) -> TrialResult:
    assert spec.metric is not None
    run = client.create_run(exp_id, run_name=trial.label, tags={
        "mlflow.parentRunId": parent_run_id, Tag.JOB_ID: job_id, Tag.CANDIDATE: trial.label})
    run_id = run.info.run_id
    started = time.monotonic()
    try:
        client.log_batch(run_id, params=[Param(k, v) for k, v in _flat_params(trial).items()])
        pipe = build(spec, trial.candidate, trial.index)
        if trial.overrides:
            pipe.set_params(**{f"{GRID_STEPS[k.split('__', 1)[0]]}__{k.split('__', 1)[1]}": v
                               for k, v in trial.overrides.items()})
        pipe.fit(prep.X_train, prep.y_train)
        metrics = score_all(spec.task, prep.y_val, pipe.predict(prep.X_val))
        seconds = time.monotonic() - started
        stamp = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(f"val_{k}", v, stamp, 0) for k, v in metrics.items()]
                         + [Metric("training_duration_seconds", seconds, stamp, 0)])
        client.set_terminated(run_id, "FINISHED")
        return TrialResult(trial.label, "succeeded", run_id, metrics[spec.metric.name], metrics, seconds,
                           pipeline=pipe)
    except Exception as exc:  # noqa: BLE001 - one failing candidate must not sink the job
        error = f"{type(exc).__name__}: {exc}"
        log.warning("candidate %s failed: %s", trial.label, error)
        try:
            client.set_tag(run_id, Tag.ERROR, error[:5000])
            client.log_text(run_id, traceback.format_exc(), "error.txt")
            client.set_terminated(run_id, "FAILED")
        except Exception:  # the job goes on even when MLflow refuses the failure record
            log.exception("could not record the failure of %s", trial.label)
        return TrialResult(trial.label, "failed", run_id, seconds=time.monotonic() - started, error=error)


def train_all(spec: ModelSpec, prep: Prepared, client: MlflowClient, exp_id: str, parent_run_id: str,
              job_id: str, parallelism: int, on_done: Callable[[int, int, TrialResult], None]) -> list[TrialResult]:
    todo = trials(spec)
    results: list[TrialResult] = []

    def run(trial: Trial) -> TrialResult:
        result = train_trial(spec, prep, trial, client, exp_id, parent_run_id, job_id)
        results.append(result)
        on_done(len(results), len(todo), result)
        return result

    if parallelism > 1 and len(todo) > 1:
        with ThreadPoolExecutor(max_workers=parallelism) as pool:
            ordered = list(pool.map(run, todo))
    else:
        ordered = [run(t) for t in todo]
    return ordered


def best_of(spec: ModelSpec, results: list[TrialResult]) -> TrialResult | None:
    assert spec.metric is not None
    ok = [r for r in results if r.status == "succeeded" and r.score is not None and np.isfinite(r.score)]
    if not ok:
        return None
    sign = 1 if spec.metric.higher_is_better else -1
    return max(ok, key=lambda r: sign * r.score)  # type: ignore[operator]


def kill_leftover_children(client: MlflowClient, exp_id: str, parent_run_id: str) -> int:
    """Runs a crashed delivery left RUNNING under this parent are marked KILLED before training again."""
    query = f"tags.mlflow.parentRunId = '{parent_run_id}' and attributes.status = 'RUNNING'"
    runs = client.search_runs([exp_id], query)
    for run in runs:
        client.set_terminated(run.info.run_id, "KILLED")
    return len(runs)


def predict_frame(prep: Prepared, X: pd.DataFrame) -> pd.DataFrame:
    return X[prep.inputs].reset_index(drop=True)


def requirements() -> list[str]:
    reqs = []
    for dist in ("mlflow", "scikit-learn", "numpy", "pandas", "scipy", "gensim", "skops"):
        try:
            reqs.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            continue
    return reqs


def trusted_types(pipe: Pipeline) -> list[str]:
    """The types skops must be told to trust to load this pipeline (our own featurizers, scipy matrices)."""
    import skops.io

    return skops.io.get_untrusted_types(data=skops.io.dumps(pipe))


def _module_file(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"{name} is part of the model but its source cannot be found")
    return Path(spec.origin)


def _project_imports(name: str) -> set[str]:
    """The modules of the shipped package that module ``name`` imports (the modules a ``from`` names included)."""
    package = name if _module_file(name).name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(_module_file(name).read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {mod for mod in found if mod.split(".")[0] == SHIPPED_PACKAGE and _is_module(mod)}


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # a name imported from a module, not a module
        return False


def shipped_code(types: list[str], staging: Path) -> list[str]:
    """Copies into ``staging`` the modules of :data:`SHIPPED_PACKAGE` that the pipeline's types (skops'
    untrusted types) come from, what they import of it, and the packages around them, at the same import path;
    returns the ``code_paths`` for MLflow (empty when the pipeline uses none)."""
    todo = {t.rpartition(".")[0] for t in types if t.split(".")[0] == SHIPPED_PACKAGE}
    todo = {mod for mod in todo if _is_module(mod)}
    if not todo:
        return []
    modules: set[str] = set()
    while todo:
        name = todo.pop()
        parts = name.split(".")
        modules.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
        todo |= _project_imports(name) - modules
    root = _module_file(SHIPPED_PACKAGE).parent
    for name in sorted(modules):
        source = _module_file(name)
        target = staging / SHIPPED_PACKAGE / source.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    return [str(staging / SHIPPED_PACKAGE)]


def log_model(pipe: Pipeline, example: pd.DataFrame) -> Any:
    """Logs the pipeline as the active run's ``model``, with the project code it is made of inside it, so that
    it serves where only its requirements (never this project's packages) are installed."""
    signature = infer_signature(example, pipe.predict(example))
    types = trusted_types(pipe)
    path_before = set(sys.path)
    try:
        with tempfile.TemporaryDirectory(prefix="model-code-") as staging:
            return mlflow.sklearn.log_model(pipe, name="model", signature=signature, input_example=example,
                                            pip_requirements=requirements(), skops_trusted_types=types,
                                            code_paths=shipped_code(types, Path(staging)) or None)
    finally:
        # MLflow checks the input example by loading the model in this process, which prepends the model's
        # (temporary) code directory to sys.path for good.
        sys.path[:] = [entry for entry in sys.path if entry in path_before]


def reference_stats(spec: ModelSpec, prep: Prepared, val_predictions: np.ndarray) -> dict | None:
    """The predictor's drift reference, when the shared drift module is there (None otherwise)."""
    try:
        from mlops_common import drift
    except ImportError:
        return None
    build_reference = getattr(drift, "build_reference", None)
    if build_reference is None:
        return None
    if spec.task == TEXT_CLASSIFICATION:
        inputs: Any = prep.X_train[spec.data.text_column].astype(str).tolist()
    else:
        inputs = prep.X_train[prep.inputs]
    return build_reference(spec.task, inputs, list(val_predictions), spec)


def log_parent(spec: ModelSpec, prep: Prepared, best: TrialResult, results: list[TrialResult], snap: Snapshot,
               frame: pd.DataFrame, job_id: str, log_dataset_max_bytes: int) -> tuple[dict[str, float], Any]:
    """Inside the active parent run: evaluate the best on test and log everything; returns (test metrics,
    model info)."""
    assert best.pipeline is not None and spec.metric is not None
    pipe = best.pipeline
    test_pred = pipe.predict(prep.X_test)
    test_metrics = score_all(spec.task, prep.y_test, test_pred)
    val_pred = pipe.predict(prep.X_val)

    mlflow.log_params({
        "model_name": spec.name, "task": spec.task, "best_candidate": best.label, "metric": spec.metric.name,
        "metric.higher_is_better": spec.metric.higher_is_better, "metric.threshold": spec.metric.threshold,
        "metric.margin": spec.metric.margin, "split.seed": spec.split.seed, "split.test_size": spec.split.test_size,
        "split.validation_size": spec.split.validation_size, "candidates": len(results),
        "dataset.sha256": snap.sha256,
    })
    metrics = {f"test_{k}": v for k, v in test_metrics.items()}
    metrics.update({f"val_{k}": v for k, v in best.metrics.items()})
    metrics.update({k: float(v) for k, v in prep.counts.items()})
    metrics.update({f"rows_dropped_{k}": float(v) for k, v in prep.dropped.items()})
    metrics["training_duration_seconds"] = float(sum(r.seconds for r in results))
    metrics["candidates_failed"] = float(sum(r.status == "failed" for r in results))
    mlflow.log_metrics(metrics)
    mlflow.set_tags({Tag.BEST_CANDIDATE: best.label, Tag.DATASET_SHA256: snap.sha256, Tag.MODEL_NAME: spec.name,
                     **code_version_tags()})
    mlflow.log_dict(json.loads(spec.model_dump_json()), SPEC_ARTIFACT)
    mlflow.log_dict({"candidates": [r.public() for r in results], "dropped_rows": prep.dropped,
                     "ignored_columns": prep.ignored_columns}, "candidates.json")

    # Source = the content-addressed snapshot (the exact bytes); where it came from is the "origin" tag.
    # MLflow caps dataset digests at 36 characters, so the full sha256 is in the tags (and the name).
    dataset = from_pandas(frame, source=snap.path, name=f"{spec.name}-{snap.sha256[:12]}", digest=snap.sha256[:32])
    mlflow.log_input(dataset, context="training", tags={"sha256": snap.sha256, "rows": str(snap.rows),
                                                         "dataset_id": snap.dataset_id, "origin": snap.source[:500]})
    if snap.size_bytes <= log_dataset_max_bytes:
        mlflow.log_artifact(snap.path, "dataset")

    if spec.task == TEXT_CLASSIFICATION:
        fig = confusion_figure(prep.y_test, test_pred, f"{spec.name}: {best.label} on test")
        mlflow.log_figure(fig, "plots/confusion_matrix.png")
    else:
        fig = residual_figure(prep.y_test, test_pred, f"{spec.name}: {best.label} on test")
        mlflow.log_figure(fig, "plots/residuals.png")

    try:
        reference = reference_stats(spec, prep, val_pred)
    except Exception:  # the drift reference is best effort; the model is still good
        log.exception("could not build the drift reference")
        reference = None
    if reference is not None:
        mlflow.log_dict(reference, REFERENCE_STATS_ARTIFACT)

    info = log_model(pipe, predict_frame(prep, prep.X_val.head(3)))
    return test_metrics, info


def metric_names(task: str) -> list[str]:
    return list(METRICS[task])
