"""Predictor fixtures: a predictor process that depends on MLflow and Redis only (not on registry-proxy).

Tests register tiny models with MLflow directly, move the alias with MlflowClient and publish the
ModelEvent themselves, as registry-proxy would.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest


@pytest.fixture(scope="session")
def start_predictor(predictor_factory: Callable[..., str]) -> Callable[..., str]:
    """``predictor_factory`` with drift recomputed every 0.5 s; returns the predictor's base URL."""

    def start(model_name: str, extra_env: dict[str, str] | None = None) -> str:
        return predictor_factory(model_name, {"DRIFT_INTERVAL_SECONDS": "0.5", **(extra_env or {})})

    return start
