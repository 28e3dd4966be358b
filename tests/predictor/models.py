"""Tiny models registered straight into MLflow, the way the trainer logs them (signature, input example,
drift reference, spec), plus helpers that move the production alias as registry-proxy would."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import httpx
import mlflow
import numpy as np
import pandas as pd
import redis
from mlflow.models import infer_signature
from sklearn.compose import ColumnTransformer
from sklearn.dummy import DummyClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

from mlops_common import mlflow_utils
from mlops_common.drift import build_reference
from mlops_common.events import ModelEvent
from mlops_common.featurizers import TextColumn
from tests.support.mlflow_auth import let_registry_proxy_manage
from tests.support.waiting import wait_for  # noqa: F401 - re-exported for the suite

TRUSTED = ["mlops_common.featurizers.TextColumn", "mlops_common.featurizers.Word2VecVectorizer"]
REQUIREMENTS = ["scikit-learn", "pandas"]  # given, so MLflow does not infer them in a subprocess
DATA = Path(__file__).resolve().parents[2] / "data" / "sms_spam.csv"


def sms(n: int = 600, offset: int = 0) -> tuple[list[str], list[str]]:
    with DATA.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))[offset:offset + n]
    return [r["text"] for r in rows], [r["label"] for r in rows]


def text_pipeline(texts: list[str], labels: list[str], c: float = 10.0) -> Pipeline:
    pipe = Pipeline([("text", TextColumn("text")), ("features", TfidfVectorizer()),
                     ("model", LogisticRegression(C=c, max_iter=500))])
    return pipe.fit(texts, labels)


def broken_text_pipeline() -> Pipeline:
    """Loads fine but fails its warm-up: square roots of strings."""
    pipe = Pipeline([("boom", FunctionTransformer(np.sqrt)), ("model", DummyClassifier())])
    return pipe.fit(np.array([[1.0], [4.0]]), ["ham", "spam"])


def taxi_frame(n: int, seed: int = 0, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "distance_km": rng.gamma(2.0, 2.0, n) + shift,
        "passengers": rng.integers(1, 5, n),
        "vendor": rng.choice(["a", "b"], n),
    })


def taxi_pipeline(frame: pd.DataFrame) -> Pipeline:
    features = ColumnTransformer([("num", "passthrough", ["distance_km", "passengers"]),
                                  ("cat", OneHotEncoder(handle_unknown="ignore"), ["vendor"])])
    pipe = Pipeline([("features", features), ("model", LinearRegression())])
    return pipe.fit(frame, fare(frame))


def fare(frame: pd.DataFrame) -> np.ndarray:
    return 2.5 + 1.8 * frame.distance_km.to_numpy() + 0.3 * frame.passengers.to_numpy()


def register(mlflow_uri: str, name: str, model: Any, example: Any, task: str,
             reference_inputs: Any = None, reference_predictions: Any = None,
             spec: dict[str, Any] | None = None) -> str:
    """Log ``model`` with signature and input example in a run, with reference stats; register it."""
    mlflow.set_tracking_uri(mlflow_uri)
    mlflow.set_registry_uri(mlflow_uri)
    mlflow.set_experiment(f"predictor-tests-{name}")
    with mlflow.start_run() as run:
        if isinstance(example, pd.DataFrame):
            try:
                output = model.predict(example)
            except Exception:
                output = None
        else:
            output = None
        signature = infer_signature(example, output)
        try:  # skops (MLflow's default format), trusting our own featurizers
            mlflow.sklearn.log_model(model, name="model", signature=signature, input_example=example,
                                     skops_trusted_types=TRUSTED, pip_requirements=REQUIREMENTS)
        except mlflow.exceptions.MlflowException:
            mlflow.sklearn.log_model(model, name="model", signature=signature, input_example=example,
                                     serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
                                     pip_requirements=REQUIREMENTS)
        if reference_inputs is not None:
            mlflow.log_dict(build_reference(task, reference_inputs, reference_predictions, spec),
                            "reference/reference_stats.json")
        if spec is not None:
            mlflow.log_dict({**spec, "task": task}, "spec.json")
    version = mlflow.register_model(f"runs:/{run.info.run_id}/model", name)
    let_registry_proxy_manage(mlflow.get_tracking_uri(), name)
    return str(version.version)


def promote(mlflow_uri: str, redis_url: str | None, channel: str | None, name: str, version: str) -> None:
    """Move `production` like registry-proxy: set the alias in MLflow, then announce it (if a channel)."""
    client = mlflow_utils.client(mlflow_uri)
    old = mlflow_utils.version_by_alias(client, name, mlflow_utils.PRODUCTION)
    client.set_registered_model_alias(name, mlflow_utils.PRODUCTION, version)
    if redis_url and channel:
        event = ModelEvent(model=name, alias="production", version=version,
                           previous_version=str(old.version) if old else None)
        conn = redis.Redis.from_url(redis_url)
        conn.publish(channel, event.to_json())
        conn.close()


def served_version(url: str) -> str | None:
    """The version a predictor says it serves, or None while it cannot say (not up, no model yet)."""
    try:
        return httpx.get(f"{url}/model", timeout=5).json().get("model_version")
    except (httpx.HTTPError, ValueError):
        return None


def metric_value(url: str, name: str, **labels: str) -> float | None:
    """The value of one sample of /metrics, or None."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            return float(value)
    return None
