"""Predictor fixtures: a predictor process that depends on MLflow and Redis only (not on registry-proxy).

Tests register tiny models with MLflow directly, move the alias with MlflowClient and publish the
ModelEvent themselves, as registry-proxy would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import processes as p


@pytest.fixture(scope="session")
def start_predictor(base_env: dict[str, str], log_dir: Path) -> Iterator[Callable[..., str]]:
    """Starts a predictor for a model name with extra env; returns its base URL; stops all at the end."""
    started: list[p.Process] = []

    def start(model_name: str, extra_env: dict[str, str] | None = None) -> str:
        env = {**base_env, "MODEL_NAME": model_name, "POLL_INTERVAL_SECONDS": "2",
               "DRIFT_INTERVAL_SECONDS": "0.5", **(extra_env or {})}
        proc, url = p.uvicorn_service(f"predictor-{model_name}", "predictor.main:app", env, log_dir)
        started.append(proc)
        return url

    yield start
    for proc in started:
        proc.stop()
