"""Predictor fixtures: a predictor process that serves from MLflow and Redis only (not through registry-proxy).

Tests register tiny models with MLflow directly, move the alias with MlflowClient and publish the
ModelEvent themselves, as registry-proxy would. registry-proxy still runs: the predictor asks it who a token
belongs to (``POST /feedback`` needs role scientist or higher).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest


@pytest.fixture(scope="session")
def start_predictor(predictor_factory: Callable[..., str], registry_url: str) -> Callable[..., str]:
    """``predictor_factory`` with drift recomputed every 0.5 s; returns the predictor's base URL. Asking for
    ``registry_url`` first puts REGISTRY_URL in the predictors' environment, to check tokens with."""

    def start(model_name: str, extra_env: dict[str, str] | None = None) -> str:
        return predictor_factory(model_name, {"DRIFT_INTERVAL_SECONDS": "0.5", **(extra_env or {})})

    return start
