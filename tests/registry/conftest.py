"""Helpers for registry-proxy tests: tiny versions registered straight in MLflow, API clients, event taps."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import mlflow
import pytest
from mlflow.tracking import MlflowClient

from tests.registry.helpers import EventTap, OwnRegistry, Receiver
from tests.support import processes as p
from tests.support.registry import add_version

EXPERIMENT = "registry-proxy-tests"


@pytest.fixture(scope="session")
def mlflow_client(mlflow_uri: str) -> MlflowClient:
    mlflow.set_tracking_uri(mlflow_uri)
    return MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)


@pytest.fixture(scope="session")
def tiny_model_id(mlflow_client: MlflowClient) -> str:
    """One real, tiny sklearn model logged once (its id); every test version points at it."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    mlflow.set_experiment(EXPERIMENT)
    X = np.array([[0.0], [1.0], [2.0], [3.0]])
    y = np.array(["ham", "ham", "spam", "spam"])
    with mlflow.start_run(run_name="tiny-model"):
        info = mlflow.sklearn.log_model(LogisticRegression().fit(X, y), name="model", input_example=X[:1],
                                        pip_requirements=["scikit-learn"])
    return info.model_id


Register = Callable[..., str]


@pytest.fixture(scope="session")
def register(mlflow_client: MlflowClient, mlflow_uri: str, tiny_model_id: str) -> Register:
    """register(name, f1_macro=0.9, tags={...}) -> version: a run with those metrics and a model version."""
    experiment = mlflow_client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None

    def _register(name: str, tags: dict[str, str] | None = None, **metrics: float) -> str:
        run = mlflow_client.create_run(experiment.experiment_id)
        for key, value in (metrics or {"f1_macro": 0.9}).items():
            mlflow_client.log_metric(run.info.run_id, key, value)
        mlflow_client.set_terminated(run.info.run_id)
        return add_version(mlflow_client, mlflow_uri, name, f"models:/{tiny_model_id}", run.info.run_id, tiny_model_id,
                           tags)

    return _register


@pytest.fixture()
def api(registry_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=registry_url, timeout=60) as client:
        yield client


@pytest.fixture()
def event_tap(redis_url: str, base_env: dict[str, str]) -> Iterator[EventTap]:
    tap = EventTap(redis_url, base_env["MODEL_EVENTS_CHANNEL"])
    time.sleep(0.2)  # let the subscription settle before the test publishes
    yield tap
    tap.close()


@pytest.fixture(scope="session")
def own_registry(base_env: dict[str, str], log_dir: Path) -> Iterator[OwnRegistry]:
    """A second registry-proxy whose database URL the tests know, with a webhook receiver wired in."""
    receiver = Receiver()
    with p.postgres_database("mlops_test_registry_own") as db_url:
        env = {**base_env, "REGISTRY_DATABASE_URL": db_url, "NOTIFY_WEBHOOK_URL": receiver.url,
               "NOTIFY_MAX_ATTEMPTS": "4", "NOTIFY_BACKOFF_SECONDS": "0.1", "PUBLIC_URL": "http://registry.example"}
        proc, url = p.uvicorn_service("registry-proxy-own", "registry_proxy.main:app", env, log_dir)
        try:
            yield OwnRegistry(url, db_url, receiver)
        finally:
            proc.stop()
            receiver.close()
