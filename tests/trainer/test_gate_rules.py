"""The gate of DESIGN.md as a pure function: every branch, both metric directions, the margin."""

from __future__ import annotations

import pytest

from mlops_common.spec import MetricSpec
from trainer.gate import decide

F1 = MetricSpec(name="f1_macro", higher_is_better=True, threshold=0.8, margin=0.01)
MAE = MetricSpec(name="mae", higher_is_better=False, threshold=2.0, margin=0.1)


@pytest.mark.parametrize(("metric", "challenger", "production", "version", "outcome"), [
    (F1, 0.90, None, None, "promoted"),            # no production, meets the bar
    (F1, 0.70, None, None, "pending_approval"),    # no production, misses the bar
    (F1, 0.90, 0.85, "1", "promoted"),             # better by more than the margin and meets the bar
    (F1, 0.855, 0.85, "1", "kept"),                # better, but not by more than the margin
    (F1, 0.84, 0.85, "1", "kept"),                 # worse, production still meets the bar
    (F1, 0.79, 0.70, "1", "pending_approval"),     # better but under the bar, production under it too
    (F1, 0.60, 0.70, "1", "pending_approval"),     # neither meets the bar
    (F1, 0.90, None, "1", "pending_approval"),     # production could not be evaluated: a human decides
    (MAE, 1.0, 1.5, "3", "promoted"),              # lower is better
    (MAE, 1.45, 1.5, "3", "kept"),                 # within the margin
    (MAE, 2.5, 3.0, "3", "pending_approval"),      # both above the MAE bar
    (MetricSpec(name="mae", higher_is_better=False), 9.0, None, None, "promoted"),  # no threshold: any score meets
])
def test_gate(metric: MetricSpec, challenger: float, production: float | None, version: str | None,
              outcome: str) -> None:
    decided, reason = decide(metric, challenger, production, version)
    assert decided == outcome, reason
    assert metric.name in reason
