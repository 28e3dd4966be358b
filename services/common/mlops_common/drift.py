"""Drift reference statistics and a sliding-window drift monitor.

The trainer calls :func:`build_reference` on the training split and logs the result as the run artifact
``reference/reference_stats.json``; the predictor loads it beside the model and feeds a :class:`DriftMonitor`
with every batch it serves.

Reference format (``format_version`` 1), JSON-serialisable::

    {"format_version": 1, "task": "text-classification" | "tabular-regression", "n_rows": int,
     "thresholds": {"psi": 0.25, "js": 0.1, "window_size": 1000},
     "metric": "js" | "psi",               # the score every feature of this task uses
     "features": {name: distribution, ...}, # text: "tokens" and "length"; tabular: one per raw column
     "prediction": distribution | null}

A distribution is one of
  ``{"kind": "numeric", "edges": [e1, ...], "proportions": [...]}``: bins ``(-inf, e1], (e1, e2], ..., (ek, inf)``
  then a last bin for missing values;
  ``{"kind": "categorical", "categories": [...], "proportions": [...]}``: one bin per category then ``other``;
  ``{"kind": "tokens", "tokens": [...], "proportions": [...]}``: token frequencies over the top tokens then
  ``other``;
  ``{"kind": "hour", "proportions": [24 values + missing]}``: hour of day of a datetime column.

Text models are scored with the Jensen-Shannon distance (base 2, in [0, 1], corrected for the window's size:
see :func:`window_js_distance`); tabular models with PSI. The overall score is the largest feature score
(prediction included), compared with the task's threshold.
"""

from __future__ import annotations

import math
import threading
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlops_common.featurizers import tokenize
from mlops_common.names import TEXT_CLASSIFICATION

FORMAT_VERSION = 1
TEXT_TASK = TEXT_CLASSIFICATION
TOP_TOKENS = 100
TOP_CATEGORIES = 20
NUMERIC_BINS = 10
LENGTH_BINS = 10
EPSILON = 1e-4
DEFAULT_PSI_THRESHOLD = 0.25
DEFAULT_JS_THRESHOLD = 0.1
DEFAULT_WINDOW_SIZE = 1000
PREDICTION = "prediction"
OVERALL = "overall"


# --- distances -------------------------------------------------------------------------------------------

def _normalise(values: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    total = arr.sum()
    return arr / total if total > 0 else np.full(arr.shape, 1.0 / max(len(arr), 1))


def psi(expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray,
        epsilon: float = EPSILON) -> float:
    """Population stability index of ``actual`` against ``expected`` (counts or proportions, same bins)."""
    e = np.clip(_normalise(expected), epsilon, None)
    a = np.clip(_normalise(actual), epsilon, None)
    e, a = e / e.sum(), a / a.sum()
    return float(np.sum((a - e) * np.log(a / e)))


def js_distance(p: Sequence[float] | np.ndarray, q: Sequence[float] | np.ndarray) -> float:
    """Jensen-Shannon distance (square root of the divergence, base 2): 0 identical, 1 disjoint."""
    p_, q_ = _normalise(p), _normalise(q)
    m = 0.5 * (p_ + q_)

    def kl(x: np.ndarray) -> float:
        mask = x > 0
        return float(np.sum(x[mask] * np.log2(x[mask] / m[mask])))

    divergence = max(0.5 * kl(p_) + 0.5 * kl(q_), 0.0)
    return float(min(math.sqrt(divergence), 1.0))


def window_js_distance(reference: Sequence[float] | np.ndarray, counts: Sequence[float] | np.ndarray) -> float:
    """Jensen-Shannon distance of a window's counts from a reference, corrected for the window's size.

    A window of n draws from the reference itself has an expected divergence of about (k - 1) / (8 n) nats
    over k bins, which is large for small windows (k = 100 tokens and n = 750 gives a distance near 0.15).
    That expected value is subtracted before the square root, so an unchanged distribution scores near 0
    whatever the window size, while a real shift keeps its size.
    """
    ref = _normalise(reference)
    c = np.asarray(counts, dtype=float)
    n = c.sum()
    if n <= 0:
        return 0.0
    raw = js_distance(ref, c) ** 2
    bins = max(int(np.count_nonzero(ref > 0)), 1)
    expected = (bins - 1) / (8.0 * n * math.log(2))
    return float(min(math.sqrt(max(raw - expected, 0.0)), 1.0))


# --- binning ---------------------------------------------------------------------------------------------

def _numeric(values: Iterable[Any]) -> np.ndarray:
    numbers: np.ndarray = pd.to_numeric(pd.Series(list(values) if not isinstance(values, pd.Series) else values),
                                        errors="coerce").to_numpy(dtype=float)
    return numbers


def numeric_edges(values: np.ndarray, bins: int = NUMERIC_BINS) -> list[float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return []
    quantiles = np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1])
    return [float(x) for x in np.unique(quantiles)]


def numeric_bins(values: np.ndarray, edges: Sequence[float] | np.ndarray) -> np.ndarray:
    """Bin index of each value: ``len(edges) + 1`` value bins, then one bin for missing values."""
    idx = np.searchsorted(np.asarray(edges, dtype=float), values, side="left")
    idx[~np.isfinite(values)] = len(edges) + 1
    return idx


def _counts(indices: np.ndarray, size: int) -> np.ndarray:
    return np.bincount(indices.astype(np.int64), minlength=size)[:size].astype(float)


def _proportions(counts: np.ndarray) -> list[float]:
    total = counts.sum()
    return [float(c / total) if total else 0.0 for c in counts]


def _numeric_dist(values: np.ndarray, bins: int = NUMERIC_BINS) -> dict[str, Any]:
    edges = numeric_edges(values, bins)
    counts = _counts(numeric_bins(values, edges), len(edges) + 2)
    return {"kind": "numeric", "edges": edges, "proportions": _proportions(counts)}


def _categorical_dist(values: Iterable[Any], top: int = TOP_CATEGORIES) -> dict[str, Any]:
    counter = Counter("" if v is None else str(v) for v in values)
    categories = [c for c, _ in counter.most_common(top)]
    counts = np.array([counter[c] for c in categories] + [sum(counter.values()) - sum(counter[c] for c in categories)],
                      dtype=float)
    return {"kind": "categorical", "categories": categories, "proportions": _proportions(counts)}


def _looks_like_datetime(series: pd.Series) -> bool:
    sample = series.dropna().astype(str).head(50)
    if sample.empty or sample.str.len().min() < 8:
        return False
    parsed = pd.to_datetime(sample, errors="coerce", format="mixed")
    return bool(parsed.notna().mean() > 0.9)


def _hours(values: Iterable[Any]) -> np.ndarray:
    parsed = pd.to_datetime(pd.Series(list(values) if not isinstance(values, pd.Series) else values),
                            errors="coerce", format="mixed")
    hours = parsed.dt.hour.to_numpy(dtype=float)
    out = np.where(np.isfinite(hours), hours, 24).astype(np.int64)
    return out


def _texts(inputs: Any, text_column: str | None) -> list[str]:
    if isinstance(inputs, pd.DataFrame):
        column = text_column if text_column in inputs.columns else inputs.columns[0]
        inputs = inputs[column]
    return ["" if v is None else str(v) for v in (inputs.tolist() if hasattr(inputs, "tolist") else inputs)]


# --- reference -------------------------------------------------------------------------------------------

def _spec_value(spec: Any, *path: str) -> Any:
    node = spec
    for key in path:
        if node is None:
            return None
        node = node.get(key) if isinstance(node, dict) else getattr(node, key, None)
    return node


def build_reference(task: str, inputs: Any, predictions: Any, spec: Any = None) -> dict[str, Any]:
    """Reference statistics of the training inputs and of the model's predictions.

    ``inputs``: the training texts (list, Series, array, or a DataFrame holding the text column) or the
    DataFrame of raw feature columns; ``predictions``: the model's predictions on validation (class labels
    or values); ``spec``: the resolved :class:`~mlops_common.spec.ModelSpec` (or its dict, or None).
    """
    thresholds = {
        "psi": float(_spec_value(spec, "drift", "psi_threshold") or DEFAULT_PSI_THRESHOLD),
        "js": float(_spec_value(spec, "drift", "js_threshold") or DEFAULT_JS_THRESHOLD),
        "window_size": int(_spec_value(spec, "drift", "window_size") or DEFAULT_WINDOW_SIZE),
    }
    features: dict[str, dict[str, Any]] = {}
    if task == TEXT_TASK:
        texts = _texts(inputs, _spec_value(spec, "data", "text_column"))
        tokens = [tokenize(t) for t in texts]
        counter: Counter[str] = Counter()
        for toks in tokens:
            counter.update(toks)
        top = [t for t, _ in counter.most_common(TOP_TOKENS)]
        total = sum(counter.values())
        counts = np.array([counter[t] for t in top] + [total - sum(counter[t] for t in top)], dtype=float)
        features["tokens"] = {"kind": "tokens", "tokens": top, "proportions": _proportions(counts)}
        features["length"] = _numeric_dist(np.array([len(t) for t in tokens], dtype=float), LENGTH_BINS)
        n_rows = len(texts)
    else:
        frame = inputs if isinstance(inputs, pd.DataFrame) else pd.DataFrame(inputs)
        for column in frame.columns:
            series = frame[column]
            if pd.api.types.is_bool_dtype(series):
                features[str(column)] = _categorical_dist(series)
            elif pd.api.types.is_numeric_dtype(series):
                features[str(column)] = _numeric_dist(series.to_numpy(dtype=float))
            elif _looks_like_datetime(series):
                features[str(column)] = {"kind": "hour", "proportions": _proportions(_counts(_hours(series), 25))}
            elif series.nunique(dropna=True) <= max(TOP_CATEGORIES * 5, 0.5 * len(series)):
                features[str(column)] = _categorical_dist(series)
        n_rows = len(frame)
    prediction = None
    if predictions is not None and len(predictions) > 0:
        values = list(predictions.tolist() if hasattr(predictions, "tolist") else predictions)
        if task == TEXT_TASK:
            prediction = _categorical_dist(values, top=50)
        else:
            prediction = _numeric_dist(_numeric(values))
    return {
        "format_version": FORMAT_VERSION,
        "task": task,
        "n_rows": int(n_rows),
        "metric": "js" if task == TEXT_TASK else "psi",
        "thresholds": thresholds,
        "features": features,
        "prediction": prediction,
    }


# --- monitor ---------------------------------------------------------------------------------------------

class _Binner:
    """Maps raw values of one feature to bin indices of its reference distribution."""

    def __init__(self, dist: dict[str, Any]) -> None:
        self.kind = dist["kind"]
        self.reference = np.asarray(dist["proportions"], dtype=float)
        self.size = len(self.reference)
        if self.kind == "numeric":
            self.edges = np.asarray(dist["edges"], dtype=float)
        elif self.kind in ("categorical", "tokens"):
            names = dist["categories"] if self.kind == "categorical" else dist["tokens"]
            self.index = {name: i for i, name in enumerate(names)}
            self.other = len(names)

    def bin_values(self, values: Any) -> np.ndarray:
        if self.kind == "numeric":
            return numeric_bins(_numeric(values), self.edges)
        if self.kind == "hour":
            return _hours(values)
        get, other = self.index.get, self.other
        return np.fromiter((get("" if v is None else str(v), other) for v in values), dtype=np.int64)

    def bin_tokens(self, tokens: list[str]) -> np.ndarray:
        get, other = self.index.get, self.other
        return np.fromiter((get(t, other) for t in tokens), dtype=np.int64, count=len(tokens))


@dataclass
class DriftReport:
    features: dict[str, float]
    overall: float
    threshold: float
    metric: str
    samples: int
    ready: bool
    drifted: list[str] = field(default_factory=list)

    @property
    def is_drifting(self) -> bool:
        return self.ready and self.overall > self.threshold


class DriftMonitor:
    """Compares a sliding window of the most recent inputs and predictions with a reference.

    :meth:`observe` is cheap (binning and integer counts; the window keeps per-item bin indices and
    subtracts the oldest ones as it slides); :meth:`report` computes the distances on demand.
    Scores are reported once the window holds ``min_samples`` items (before that ``ready`` is False).
    """

    def __init__(self, reference: dict[str, Any], window_size: int | None = None,
                 psi_threshold: float | None = None, js_threshold: float | None = None,
                 min_samples: int | None = None) -> None:
        if reference.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported reference format {reference.get('format_version')!r}")
        self.reference = reference
        self.task = reference["task"]
        self.is_text = self.task == TEXT_TASK
        thresholds = reference.get("thresholds", {})
        self.window_size = int(window_size or thresholds.get("window_size") or DEFAULT_WINDOW_SIZE)
        self.metric = reference.get("metric", "js" if self.is_text else "psi")
        psi_t = psi_threshold if psi_threshold is not None else thresholds.get("psi", DEFAULT_PSI_THRESHOLD)
        js_t = js_threshold if js_threshold is not None else thresholds.get("js", DEFAULT_JS_THRESHOLD)
        self.threshold = float(js_t if self.metric == "js" else psi_t)
        self.min_samples = int(min_samples if min_samples is not None else min(self.window_size, 100))
        self.binners = {name: _Binner(dist) for name, dist in reference["features"].items()}
        if reference.get("prediction"):
            self.binners[PREDICTION] = _Binner(reference["prediction"])
        self.counts = {name: np.zeros(b.size, dtype=np.int64) for name, b in self.binners.items()}
        # One entry per observed item: {feature: bin indices of that item}.
        self.window: deque[dict[str, np.ndarray]] = deque()
        self.lock = threading.Lock()

    @property
    def feature_names(self) -> list[str]:
        return list(self.binners)

    def _columns(self, inputs: Any, predictions: Sequence[Any] | None) -> tuple[int, dict[str, list[np.ndarray]]]:
        """Bin indices of a batch, per feature, as one small array per item."""
        per_feature: dict[str, list[np.ndarray]] = {}
        if self.is_text:
            texts = _texts(inputs, None)
            n = len(texts)
            tokens = [tokenize(t) for t in texts]
            tokens_b, length_b = self.binners.get("tokens"), self.binners.get("length")
            if tokens_b is not None:
                per_feature["tokens"] = [tokens_b.bin_tokens(toks) for toks in tokens]
            if length_b is not None:
                lengths = numeric_bins(np.fromiter((len(t) for t in tokens), dtype=float, count=n), length_b.edges)
                per_feature["length"] = list(lengths.reshape(-1, 1))
        else:
            frame = inputs if isinstance(inputs, pd.DataFrame) else pd.DataFrame(list(inputs))
            n = len(frame)
            for name, binner in self.binners.items():
                if name == PREDICTION:
                    continue
                column = (binner.bin_values(frame[name]) if name in frame.columns
                          else np.full(n, binner.size - 1, dtype=np.int64))
                per_feature[name] = list(column.reshape(-1, 1))
        pred_b = self.binners.get(PREDICTION)
        if pred_b is not None and predictions is not None and len(predictions) == n:
            values = list(predictions.tolist() if hasattr(predictions, "tolist") else predictions)
            per_feature[PREDICTION] = list(pred_b.bin_values(values).reshape(-1, 1))
        return n, per_feature

    def _add(self, per_feature: dict[str, list[np.ndarray]], sign: int) -> None:
        for name, arrays in per_feature.items():
            if arrays:
                size = self.binners[name].size
                self.counts[name] += sign * np.bincount(np.concatenate(arrays), minlength=size)[:size]

    def observe(self, inputs: Any, predictions: Sequence[Any] | None = None) -> None:
        """Add a batch of inputs (texts, or records / a DataFrame of raw columns) and their predictions."""
        n, per_feature = self._columns(inputs, predictions)
        if n == 0:
            return
        items = [{name: arrays[i] for name, arrays in per_feature.items()} for i in range(n)]
        with self.lock:
            self._add(per_feature, 1)
            self.window.extend(items)
            if len(self.window) > self.window_size:
                old: dict[str, list[np.ndarray]] = {name: [] for name in self.counts}
                while len(self.window) > self.window_size:
                    for name, bins in self.window.popleft().items():
                        old[name].append(bins)
                self._add(old, -1)

    def report(self) -> DriftReport:
        with self.lock:
            samples = len(self.window)
            counts = {name: c.copy() for name, c in self.counts.items()}
        distance = window_js_distance if self.metric == "js" else psi
        scores: dict[str, float] = {}
        for name, binner in self.binners.items():
            if counts[name].sum() == 0:
                continue
            scores[name] = round(distance(binner.reference, counts[name]), 6)
        ready = samples >= self.min_samples
        overall = max(scores.values()) if scores and ready else 0.0
        drifted = [n for n, s in scores.items() if s > self.threshold] if ready else []
        return DriftReport(features=scores, overall=overall, threshold=self.threshold, metric=self.metric,
                           samples=samples, ready=ready, drifted=drifted)

    def reset(self) -> None:
        with self.lock:
            self.window.clear()
            for c in self.counts.values():
                c[:] = 0
