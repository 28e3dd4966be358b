"""Scores and plots: the metrics a spec may select, and the confusion-matrix / residual figures."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from numpy.typing import ArrayLike
from sklearn import metrics as skm

from mlops_common.names import TABULAR_REGRESSION, TEXT_CLASSIFICATION


@dataclass(frozen=True)
class Metric:
    fn: Callable[[Any, Any], float]
    higher_is_better: bool


def _rmse(y: Any, p: Any) -> float:
    return float(np.sqrt(skm.mean_squared_error(y, p)))


METRICS: dict[str, dict[str, Metric]] = {
    TEXT_CLASSIFICATION: {
        "f1_macro": Metric(lambda y, p: skm.f1_score(y, p, average="macro", zero_division=0), True),
        "f1_weighted": Metric(lambda y, p: skm.f1_score(y, p, average="weighted", zero_division=0), True),
        "accuracy": Metric(skm.accuracy_score, True),
        "balanced_accuracy": Metric(skm.balanced_accuracy_score, True),
        "precision_macro": Metric(lambda y, p: skm.precision_score(y, p, average="macro", zero_division=0), True),
        "recall_macro": Metric(lambda y, p: skm.recall_score(y, p, average="macro", zero_division=0), True),
    },
    TABULAR_REGRESSION: {
        "mae": Metric(skm.mean_absolute_error, False),
        "rmse": Metric(_rmse, False),
        "r2": Metric(skm.r2_score, True),
        "median_ae": Metric(skm.median_absolute_error, False),
    },
}


def score_all(task: str, y_true: ArrayLike, y_pred: ArrayLike) -> dict[str, float]:
    return {name: round(float(m.fn(y_true, y_pred)), 6) for name, m in METRICS[task].items()}


def confusion_figure(y_true: Iterable[Any], y_pred: Iterable[Any], title: str) -> Figure:
    labels = sorted({str(v) for v in y_true} | {str(v) for v in y_pred})
    # A bare Figure draws with the Agg canvas and needs no pyplot state or backend choice.
    fig = Figure(figsize=(4.5, 4))
    ax = fig.subplots()
    skm.ConfusionMatrixDisplay.from_predictions(
        [str(v) for v in y_true], [str(v) for v in y_pred], labels=labels, ax=ax, colorbar=False, cmap="Blues"
    )
    ax.set_title(title)
    fig.tight_layout()
    return fig


def residual_figure(actual: ArrayLike, predicted: ArrayLike, title: str) -> Figure:
    y_true, y_pred = np.asarray(actual, float), np.asarray(predicted, float)
    fig = Figure(figsize=(9, 4))
    left, right = fig.subplots(1, 2)
    left.scatter(y_pred, y_true - y_pred, s=6, alpha=0.5)
    left.axhline(0, color="black", linewidth=0.8)
    left.set_xlabel("predicted")
    left.set_ylabel("residual (actual - predicted)")
    right.scatter(y_true, y_pred, s=6, alpha=0.5)
    lo, hi = float(min(y_true.min(), y_pred.min())), float(max(y_true.max(), y_pred.max()))
    right.plot([lo, hi], [lo, hi], color="black", linewidth=0.8)
    right.set_xlabel("actual")
    right.set_ylabel("predicted")
    fig.suptitle(title)
    fig.tight_layout()
    return fig
