"""How the predictor reads a version's spec.json: validated as a ModelSpec, or, for an older or partial spec,
field by field with a warning (what it read before the shared spec model existed)."""

from __future__ import annotations

import logging

import pytest

from mlops_common.spec import QualitySpec
from predictor.loading import ServingSpec

SPEC = {"name": "sms", "task": "text-classification",
        "data": {"uri": "data/sms_spam.csv", "text_column": "message", "label_column": "label"},
        "metric": {"name": "f1_macro", "threshold": 0.8},
        "quality": {"window_size": 50, "feedback_ttl_seconds": 3600}}


def test_a_valid_spec_is_read_through_the_model_spec(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="predictor.loading"):
        spec = ServingSpec.parse(SPEC, "sms version 1")
    assert spec == ServingSpec(task="text-classification", text_column="message", threshold=0.8,
                               feedback_ttl_seconds=3600, quality_window_size=50)
    assert caplog.records == []


def test_the_model_specs_defaults_fill_what_a_valid_spec_leaves_out() -> None:
    spec = ServingSpec.parse({**SPEC, "metric": {"name": "f1_macro"}, "quality": {}}, "sms version 1")
    assert spec is not None and spec.threshold is None
    assert (spec.feedback_ttl_seconds, spec.quality_window_size) == (QualitySpec().feedback_ttl_seconds,
                                                                     QualitySpec().window_size)


def test_an_old_or_partial_spec_is_read_field_by_field_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    old = {"task": "tabular-regression", "metric": {"threshold": 2}, "quality": {"window_size": 20},
           "retired_field": True}
    with caplog.at_level(logging.WARNING, logger="predictor.loading"):
        spec = ServingSpec.parse(old, "taxi version 3")
    assert spec == ServingSpec(task="tabular-regression", threshold=2.0, quality_window_size=20,
                               feedback_ttl_seconds=QualitySpec().feedback_ttl_seconds)
    assert any("taxi version 3" in r.getMessage() and "does not validate" in r.getMessage() for r in caplog.records)


def test_no_spec_and_a_spec_that_is_not_an_object() -> None:
    assert ServingSpec.parse(None, "x version 1") is None
    assert ServingSpec.parse(["not", "a", "spec"], "x version 1") == ServingSpec()
