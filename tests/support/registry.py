"""Model versions and aliases for tests: versions registered straight into MLflow (as its admin, the way the
trainer logs them), the production alias moved as registry-proxy moves it, and what a predictor serves."""

from __future__ import annotations

from typing import Any

import httpx
import mlflow
import pandas as pd
import redis
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from mlops_common import mlflow_utils
from mlops_common.drift import build_reference
from mlops_common.events import ModelEvent
from tests.support.auth import ADMIN
from tests.support.mlflow_auth import let_registry_proxy_manage
from tests.support.waiting import wait_for

TRUSTED = ["mlops_common.featurizers.TextColumn", "mlops_common.featurizers.Word2VecVectorizer"]
REQUIREMENTS = ["scikit-learn", "pandas"]  # given, so MLflow does not infer them in a subprocess


def _predict_or_none(model: Any, example: Any) -> Any:
    if not isinstance(example, pd.DataFrame):
        return None
    try:
        return model.predict(example)
    except Exception:  # a model meant to fail (a broken pipeline) is still logged, without an output schema
        return None


def register(mlflow_uri: str, name: str, model: Any, example: Any, task: str | None = None,
             reference_inputs: Any = None, reference_predictions: Any = None,
             spec: dict[str, Any] | None = None, **log_kwargs: Any) -> str:
    """Logs ``model`` in a run (signature, input example; reference stats and spec when given) and registers it
    as a new version of ``name``, which registry-proxy may then manage; returns the version.

    Without ``log_kwargs`` the model is saved with skops trusting the project's featurizers, or with cloudpickle
    when skops cannot save it; with them, exactly as they say (``skops_trusted_types=...``,
    ``serialization_format=...``) and no fallback."""
    mlflow.set_tracking_uri(mlflow_uri)
    mlflow.set_registry_uri(mlflow_uri)
    mlflow.set_experiment(f"predictor-tests-{name}")
    with mlflow.start_run() as run:
        signature = infer_signature(example, _predict_or_none(model, example))
        common = {"name": "model", "signature": signature, "input_example": example,
                  "pip_requirements": REQUIREMENTS}
        if log_kwargs:
            mlflow.sklearn.log_model(model, **common, **log_kwargs)
        else:
            try:
                mlflow.sklearn.log_model(model, **common, skops_trusted_types=TRUSTED)
            except MlflowException:
                mlflow.sklearn.log_model(model, **common,
                                         serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE)
        if reference_inputs is not None:
            assert task is not None, "reference stats need the task"
            mlflow.log_dict(build_reference(task, reference_inputs, reference_predictions, spec),
                            "reference/reference_stats.json")
        if spec is not None:
            mlflow.log_dict({**spec, "task": task}, "spec.json")
    version = mlflow.register_model(f"runs:/{run.info.run_id}/model", name)
    let_registry_proxy_manage(mlflow.get_tracking_uri(), name)
    return str(version.version)


def add_version(client: MlflowClient, tracking_uri: str, name: str, source: str, run_id: str, model_id: str | None,
                tags: dict[str, str] | None = None) -> str:
    """A new version of ``name`` (created when missing, registry-proxy granted MANAGE) pointing at an already
    logged model; returns the version."""
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    let_registry_proxy_manage(tracking_uri, name)
    mv = client.create_model_version(name, source=source, run_id=run_id, model_id=model_id, tags=tags)
    return str(mv.version)


def copies_of(mlflow_uri: str, name: str, version: str, count: int) -> list[str]:
    """``count`` new versions of ``name`` with the artifacts of ``version``."""
    client = MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
    mv = client.get_model_version(name, version)
    model_id = getattr(mv, "model_id", None) or mv.source.removeprefix("models:/")
    return [add_version(client, mlflow_uri, name, mv.source, mv.run_id, model_id) for _ in range(count)]


def set_alias(mlflow_uri: str, name: str, version: str, alias: str = mlflow_utils.PRODUCTION) -> None:
    """Moves the alias in MLflow only (no event): what a predictor must notice by polling."""
    MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri).set_registered_model_alias(name, alias, version)


def promote(mlflow_uri: str, redis_url: str | None, channel: str | None, name: str, version: str) -> None:
    """Moves ``production`` like registry-proxy: sets the alias in MLflow, then announces it (given a channel)."""
    client = mlflow_utils.client(mlflow_uri)
    old = mlflow_utils.version_by_alias(client, name, mlflow_utils.PRODUCTION)
    client.set_registered_model_alias(name, mlflow_utils.PRODUCTION, version)
    if redis_url and channel:
        event = ModelEvent(model=name, alias="production", version=version,
                           previous_version=str(old.version) if old else None)
        conn = redis.Redis.from_url(redis_url)
        conn.publish(channel, event.to_json())
        conn.close()


def promote_through_registry(registry_url: str, name: str, version: str, reason: str = "test") -> dict[str, Any]:
    """POST /models/{name}/promote as the admin: registry-proxy moves the alias and announces it."""
    r = httpx.post(f"{registry_url}/models/{name}/promote", json={"version": version, "reason": reason},
                   headers=ADMIN, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def served_version(url: str) -> str | None:
    """The version a predictor says it serves, or None while it cannot say (not up, no model yet)."""
    try:
        version = httpx.get(f"{url}/model", timeout=5).json().get("model_version")
    except (httpx.HTTPError, ValueError):
        return None
    return None if version is None else str(version)


def wait_served(url: str, version: str, timeout: float = 60) -> None:
    """Waits until the predictor at ``url`` serves ``version``."""
    wait_for(lambda: served_version(url) == str(version), timeout, f"predictor {url} serves version {version}",
             interval=0.3)
