"""The predictor's own Prometheus metrics (HTTP metrics come from the shared instrumentator)."""

from __future__ import annotations

from collections import Counter as Tally
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

MODEL_INFO = Gauge("predictor_model_info", "The served model version (value 1)", ["model_name", "model_version"])
MODEL_LOADED = Gauge("predictor_model_loaded", "1 when a production version is being served", ["model_name"])
RELOADS = Counter("predictor_model_reloads_total", "Model version loads, by outcome", ["model_name", "outcome"])
LOAD_SECONDS = Histogram("predictor_model_load_seconds", "Time to download, load and warm up a version",
                         buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120))
BATCH_SIZE = Histogram("predictor_batch_size", "Instances per predict call (after micro-batching)",
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024))
PREDICTIONS = Counter("predictor_predictions_total", "Predictions by predicted class",
                      ["model_name", "model_version", "label"])
PREDICTION_VALUE = Histogram("predictor_prediction_value", "Predicted values (regression)", ["model_name"],
                             buckets=(0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, float("inf")))
DRIFT_SCORE = Gauge("predictor_drift_score", "Drift of the recent window against the training reference "
                    "(PSI or Jensen-Shannon distance; feature=overall for the aggregate)", ["model_name", "feature"])
DRIFT_THRESHOLD = Gauge("predictor_drift_threshold", "Drift score above which the model is drifting", ["model_name"])
DRIFT_WINDOW = Gauge("predictor_drift_window_samples", "Instances in the drift window", ["model_name"])
LIVE_ACCURACY = Gauge("predictor_live_accuracy", "Accuracy over the recent feedback window", ["model_name"])
LIVE_MAE = Gauge("predictor_live_mae", "Mean absolute error over the recent feedback window", ["model_name"])
QUALITY_THRESHOLD = Gauge("predictor_quality_threshold", "The model spec's production threshold", ["model_name"])
FEEDBACK = Counter("predictor_feedback_total", "Feedback requests, by outcome", ["model_name", "outcome"])
STORE_WRITES = Counter("predictor_prediction_store_writes_total",
                       "Predictions written to Redis for feedback joins, by outcome", ["model_name", "outcome"])
# Per-model series beside the HTTP families (whose labels dashboards join on the instance: left unchanged).
MODEL_REQUESTS = Counter("predictor_model_requests_total",
                         "Prediction requests by model, the version that answered (\"\" when none) and status code",
                         ["model_name", "model_version", "status"])
MODEL_LATENCY = Histogram("predictor_model_request_duration_seconds",
                          "Prediction request latency by model and the version that answered",
                          ["model_name", "model_version"],
                          buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
VERSION_LIVE_ACCURACY = Gauge("predictor_version_live_accuracy",
                              "Accuracy over the recent feedback window of the requests a version scored "
                              "(served, canary or shadow)", ["model_name", "model_version"])
VERSION_LIVE_MAE = Gauge("predictor_version_live_mae",
                         "Mean absolute error over the recent feedback window of the requests a version scored "
                         "(served, canary or shadow)", ["model_name", "model_version"])
ROLLOUT_SHARE = Gauge("predictor_rollout_share", "The rollout split followed: the canary's weight or the "
                      "shadow's share of requests, %", ["model_name", "model_version", "role"])
SHADOW_REQUESTS = Counter("predictor_shadow_requests_total", "Requests mirrored to the shadow version, by outcome "
                          "(ok, error, shed: the mirror queue was full)", ["model_name", "model_version", "outcome"])
SHADOW_LATENCY = Histogram("predictor_shadow_request_duration_seconds", "Time the shadow version took to score a "
                           "mirrored request", ["model_name", "model_version"],
                           buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
SHADOW_COMPARED = Counter("predictor_shadow_compared_total", "Instances the shadow scored beside production, by "
                          "production's class (classifiers)", ["model_name", "model_version", "label"])
SHADOW_AGREED = Counter("predictor_shadow_agreed_total", "Instances where the shadow predicted production's class, "
                        "by production's class (classifiers)", ["model_name", "model_version", "label"])
SHADOW_ABS_DIFFERENCE = Histogram("predictor_shadow_abs_difference", "Absolute difference between the shadow's and "
                                  "production's predicted values (regressors)", ["model_name", "model_version"],
                                  buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 25, 50, 100))
VERSIONS_LOADED = Gauge("predictor_versions_loaded", "Versions held in memory beside the production one",
                        ["model_name"])
VERSION_EVICTIONS = Counter("predictor_version_evictions_total", "Versions unloaded to stay within the bound",
                            ["model_name"])


class ModelRequests:
    """Per-model request counts and latency, label children bound once per (model, version, status)."""

    def __init__(self) -> None:
        self.children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, name: str, version: str, status: int, seconds: float) -> None:
        found = self.children.get((name, version, status))
        if found is None:
            found = self.children[(name, version, status)] = (MODEL_REQUESTS.labels(name, version, str(status)),
                                                                 MODEL_LATENCY.labels(name, version))
        found[0].inc()
        found[1].observe(seconds)


class ModelMetrics:
    """Label children bound once per served version, so the request path only increments."""

    def __init__(self, model: Any) -> None:
        self.name, self.version = model.name, model.version
        self.batch_size = BATCH_SIZE
        self.classes: dict[str, Any] = {}
        if model.classes is not None:
            self.classes = {str(c): PREDICTIONS.labels(model.name, model.version, str(c)) for c in model.classes}
        self.values = None if model.classes is not None else PREDICTION_VALUE.labels(model.name)

    def observe_batch(self, values: list[Any]) -> None:
        self.batch_size.observe(len(values))
        if self.values is not None:
            observe = self.values.observe
            for v in values:
                if isinstance(v, int | float):
                    observe(v)
            return
        for label, n in Tally(values).items():
            child = self.classes.get(str(label))
            if child is None:
                child = self.classes[str(label)] = PREDICTIONS.labels(self.name, self.version, str(label))
            child.inc(n)


def set_served(name: str, version: str | None, previous: str | None) -> None:
    if previous is not None and previous != version:
        try:
            MODEL_INFO.remove(name, previous)
        except KeyError:
            pass
    if version is not None:
        MODEL_INFO.labels(name, version).set(1)
    MODEL_LOADED.labels(name).set(1 if version is not None else 0)


def clear_drift(name: str, features: list[str]) -> None:
    for feature in [*features, "overall"]:
        try:
            DRIFT_SCORE.remove(name, feature)
        except KeyError:
            pass
