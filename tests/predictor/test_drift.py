"""Unit tests of the drift reference format, the distances and the sliding-window monitor (no services)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mlops_common.drift import (
    OVERALL,
    PREDICTION,
    DriftMonitor,
    build_reference,
    js_distance,
    numeric_bins,
    psi,
    window_js_distance,
)
from mlops_common.spec import ModelSpec

HAM = ["ok see you at home later", "are you coming to dinner tonight", "call me when you get there",
       "i will be late for the meeting", "what time is the game tomorrow", "thanks for the lift home"]
SPAM = ["win a free prize now claim", "urgent call now to claim your cash award",
        "free entry txt win to 80082", "you have won a guaranteed prize call now"]


def text_spec() -> ModelSpec:
    return ModelSpec.model_validate({
        "name": "t", "task": "text-classification",
        "data": {"uri": "x.csv", "text_column": "text", "label_column": "label"},
        "drift": {"psi_threshold": 0.2, "js_threshold": 0.15, "window_size": 200},
    })


def text_reference() -> dict:
    rng = np.random.default_rng(0)
    texts = [HAM[i] for i in rng.integers(0, len(HAM), 800)] + [SPAM[i] for i in rng.integers(0, len(SPAM), 200)]
    predictions = ["ham"] * 800 + ["spam"] * 200
    return build_reference("text-classification", texts, predictions, text_spec())


def tabular_frame(n: int, shift: float = 0.0, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "distance_km": rng.gamma(2.0, 2.0, n) + shift,
        "passengers": rng.integers(1, 5, n),
        "vendor": rng.choice(["a", "b"], n),
        "pickup_datetime": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 86400 * 30, n), unit="s"),
    }).assign(pickup_datetime=lambda f: f.pickup_datetime.dt.strftime("%Y-%m-%d %H:%M:%S"))


def test_distances_behave() -> None:
    assert psi([0.5, 0.5], [0.5, 0.5]) == pytest.approx(0.0)
    assert psi([10, 10], [10, 30]) > 0.1
    assert js_distance([1, 0], [0, 1]) == pytest.approx(1.0)
    assert js_distance([1, 2, 3], [2, 4, 6]) == pytest.approx(0.0, abs=1e-9)
    assert 0 < js_distance([0.6, 0.4], [0.4, 0.6]) < 0.3
    assert psi([0, 1], [1, 0]) > 1  # empty bins are clipped, never infinite


def test_window_js_distance_is_near_zero_for_small_unchanged_windows() -> None:
    rng = np.random.default_rng(3)
    reference = rng.dirichlet(np.ones(101))
    counts = np.bincount(rng.choice(101, size=750, p=reference), minlength=101)
    assert js_distance(reference, counts) > 0.1  # the raw distance of a small sample is mostly noise
    assert window_js_distance(reference, counts) < 0.06
    shifted = np.bincount(rng.choice(101, size=750, p=np.roll(reference, 7)), minlength=101)
    assert window_js_distance(reference, shifted) > 0.3


def test_numeric_bins_put_missing_last() -> None:
    bins = numeric_bins(np.array([-5.0, 1.0, 1.5, 9.0, np.nan]), [1.0, 2.0])
    assert bins.tolist() == [0, 0, 1, 2, 3]


def test_text_reference_is_json_with_spec_thresholds() -> None:
    ref = text_reference()
    again = json.loads(json.dumps(ref))
    assert again == ref
    assert ref["task"] == "text-classification" and ref["metric"] == "js"
    assert ref["thresholds"] == {"psi": 0.2, "js": 0.15, "window_size": 200}
    tokens = ref["features"]["tokens"]
    assert "you" in tokens["tokens"] and len(tokens["proportions"]) == len(tokens["tokens"]) + 1
    assert sum(tokens["proportions"]) == pytest.approx(1.0)
    assert set(ref["features"]) == {"tokens", "length"}
    assert ref["prediction"]["categories"] == ["ham", "spam"]
    assert ref["prediction"]["proportions"][:2] == pytest.approx([0.8, 0.2])


def test_text_reference_accepts_a_dataframe_and_no_spec() -> None:
    ref = build_reference("text-classification", pd.DataFrame({"text": HAM}), None, None)
    assert ref["prediction"] is None and ref["thresholds"]["js"] == 0.1


def test_text_monitor_stays_low_on_similar_inputs_and_crosses_on_shifted_ones() -> None:
    monitor = DriftMonitor(text_reference())
    assert monitor.threshold == 0.15 and monitor.window_size == 200
    rng = np.random.default_rng(1)
    assert not monitor.report().ready
    for _ in range(20):
        is_spam = rng.random(10) < 0.2
        texts = [SPAM[rng.integers(0, len(SPAM))] if s else HAM[rng.integers(0, len(HAM))] for s in is_spam]
        monitor.observe(texts, ["spam" if s else "ham" for s in is_spam])
    steady = monitor.report()
    assert steady.ready and steady.samples == 200
    assert steady.overall < steady.threshold, steady
    shifted = [f"completely different vocabulary number {i} about crypto tokens and blockchain yields"
               for i in range(200)]
    monitor.observe(shifted, ["spam"] * 200)
    drifted = monitor.report()
    assert drifted.samples == 200  # the window slid
    assert drifted.overall > drifted.threshold
    assert {"tokens", PREDICTION} <= set(drifted.drifted)
    assert drifted.is_drifting


def test_tabular_reference_and_psi_monitor() -> None:
    train = tabular_frame(2000)
    ref = build_reference("tabular-regression", train, np.asarray(train.distance_km * 3 + 2.5), None)
    assert ref["metric"] == "psi"
    assert ref["features"]["distance_km"]["kind"] == "numeric"
    assert ref["features"]["vendor"]["kind"] == "categorical"
    assert ref["features"]["pickup_datetime"]["kind"] == "hour"
    assert len(ref["features"]["pickup_datetime"]["proportions"]) == 25
    assert ref["prediction"]["kind"] == "numeric"
    json.dumps(ref)

    monitor = DriftMonitor(ref, window_size=500)
    same = tabular_frame(500, seed=5)
    monitor.observe(same.to_dict(orient="records"), (same.distance_km * 3 + 2.5).tolist())
    steady = monitor.report()
    assert steady.ready and steady.overall < 0.1, steady

    shifted = tabular_frame(500, shift=6.0, seed=6)
    monitor.observe(shifted, (shifted.distance_km * 3 + 2.5).tolist())
    report = monitor.report()
    assert report.features["distance_km"] > 0.25
    assert report.features["vendor"] < 0.1
    assert report.overall > report.threshold == 0.25
    assert "distance_km" in report.drifted and OVERALL not in report.features


def test_monitor_tolerates_missing_columns_and_unknown_categories() -> None:
    ref = build_reference("tabular-regression", tabular_frame(300), None, None)
    monitor = DriftMonitor(ref, window_size=50, min_samples=10)
    monitor.observe([{"distance_km": "not a number", "vendor": "zzz"}] * 20)
    report = monitor.report()
    assert report.ready and report.overall > 0.25


def test_monitor_rejects_an_unknown_format() -> None:
    with pytest.raises(ValueError, match="format"):
        DriftMonitor({"format_version": 99})
