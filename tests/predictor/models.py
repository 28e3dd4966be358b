"""Tiny models for the predictor tests (text, broken, taxi fares); registering them and moving their aliases is
tests/support/registry.py's, re-exported here with the other helpers the suite uses."""

from __future__ import annotations

import httpx
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.dummy import DummyClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

from mlops_common.featurizers import TextColumn
from tests.support.data import sms  # noqa: F401 - re-exported for the suite
from tests.support.registry import (  # noqa: F401 - re-exported for the suite
    REQUIREMENTS,
    TRUSTED,
    promote,
    register,
    served_version,
)
from tests.support.waiting import wait_for  # noqa: F401 - re-exported for the suite


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
