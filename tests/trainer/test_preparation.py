"""Validation, cleaning and the split, without services: specific errors, counted drops, determinism."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlops_common.spec import ModelSpec
from trainer import taxi
from trainer.candidates import SpecError, build, check_spec
from trainer.preparation import ValidationFailed, features_and_target, prepare, raw_test_rows


def taxi_spec(**data: object) -> ModelSpec:
    spec = taxi.spec("x.csv", fast=True)
    spec["data"].update(data)
    return ModelSpec.model_validate({**spec, "name": "taxi"})


def test_taxi_cleaning_counts_what_it_drops_and_split_is_deterministic() -> None:
    frame = taxi.generate(2, 1000, seed=4)
    zero = int(((frame[["pickup_longitude", "pickup_latitude", "dropoff_longitude", "dropoff_latitude"]] == 0)
                .any(axis=1) & (frame.fare_amount >= 0)).sum())
    negative = int((frame.fare_amount < 0).sum())
    first = prepare(taxi_spec(), frame, 20)
    assert first.dropped == {"target_below_min": negative, "zero_values": zero}
    assert first.counts["rows_total"] == 1000
    kept = first.counts["rows_train"] + first.counts["rows_validation"] + first.counts["rows_test"]
    assert kept == 1000 - negative - zero
    assert first.ignored_columns == ["key"]
    again = prepare(taxi_spec(), frame.copy(), 20)
    assert np.array_equal(first.y_test, again.y_test)


def test_test_split_rows_are_the_raw_rows_and_clean_like_the_split() -> None:
    frame = taxi.generate(2, 600, seed=5)
    prep = prepare(taxi_spec(), frame, 20)
    rows = raw_test_rows(frame, prep)
    assert list(rows.columns) == list(frame.columns) and len(rows) == prep.counts["rows_test"]
    assert rows["key"].isin(frame["key"]).all() and rows["key"].is_unique  # the original rows, untouched
    # The snapshot of those rows, cleaned as a whole frame, gives back the test split exactly (a golden set).
    X, y, dropped = features_and_target(taxi_spec(), rows)
    assert dropped == {}
    assert np.array_equal(y, prep.y_test)
    pd.testing.assert_frame_equal(X, prep.X_test.reset_index(drop=True))


def test_whole_frame_cleaning_has_no_split_or_training_checks() -> None:
    spec = ModelSpec.model_validate({"name": "t", "task": "text-classification",
                                     "data": {"uri": "x", "text_column": "text", "label_column": "label"}})
    frame = pd.DataFrame({"text": ["a", None, "c"], "label": ["spam", "spam", None]})
    X, y, dropped = features_and_target(spec, frame)  # one class, one row: fine to score, not to train
    assert X["text"].tolist() == ["a"] and y.tolist() == ["spam"]
    assert dropped == {"null_label": 1, "null_text": 1}
    with pytest.raises(ValidationFailed, match="no usable row"):
        features_and_target(spec, frame.assign(text=None))
    with pytest.raises(ValidationFailed, match="missing column 'label'"):
        features_and_target(spec, frame.drop(columns=["label"]))


def test_tabular_errors_name_the_column() -> None:
    frame = taxi.generate(1, 100)
    with pytest.raises(ValidationFailed, match="target column 'fare_amount' must be numeric"):
        prepare(taxi_spec(), frame.assign(fare_amount="cheap"), 20)
    with pytest.raises(ValidationFailed, match="'pickup_datetime' must hold dates and times"):
        prepare(taxi_spec(), frame.assign(pickup_datetime="yesterday"), 20)
    with pytest.raises(ValidationFailed, match="missing column 'passenger_count'"):
        prepare(taxi_spec(), frame.drop(columns=["passenger_count"]), 20)
    with pytest.raises(ValidationFailed, match="target column 'fare_amount' is empty"):
        prepare(taxi_spec(), frame.assign(fare_amount=None), 20)


def test_text_class_with_too_few_rows_is_named() -> None:
    spec = ModelSpec.model_validate({"name": "t", "task": "text-classification",
                                     "data": {"uri": "x", "text_column": "text", "label_column": "label"}})
    frame = pd.DataFrame({"text": [f"t {i}" for i in range(42)], "label": ["a"] * 20 + ["b"] * 20 + ["c"] * 2})
    with pytest.raises(ValidationFailed, match="class 'c' has 2 row"):
        prepare(spec, frame, 20)


def test_spec_check_names_the_field() -> None:
    base = taxi.spec("x.csv")
    with pytest.raises(SpecError, match=r"data.derived: unknown key\(s\) \['bogus'\]"):
        check_spec(ModelSpec.model_validate({**base, "name": "t", "data": {**base["data"], "derived": {"bogus": 1}}}))
    with pytest.raises(SpecError, match=r"candidates\[0\].estimator.params"):
        spec = ModelSpec.model_validate({**base, "name": "t", "candidates": [
            {"estimator": {"type": "ridge", "params": {"not_a_param": 1}}}]})
        build(spec, spec.candidates[0], 0).fit(pd.DataFrame({"a": [1]}), [1])
    with pytest.raises(SpecError, match="schedule"):
        check_spec(ModelSpec.model_validate({**base, "name": "t", "schedule": "every day"}))
