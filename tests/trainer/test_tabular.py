"""Tabular regression on generated taxi fares through the real API: `scripts/simulate.py` replays two
months (upload → retrain → gate), the run records cleaning counts and a residual plot, and the logged
model serves from the raw Kaggle columns."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from scripts import simulate
from tests.support.auth import ADMIN_TOKEN
from tests.trainer.helpers import submit, wait_job
from trainer import taxi

pytestmark = pytest.mark.slow


def test_simulate_two_months_then_inspect_the_run(trainer_url: str, mlflow_uri: str, model_name: str,
                                                  capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_TOKEN", ADMIN_TOKEN)  # the script reads its token as a user's shell would give it
    code = simulate.main(["--trainer-url", trainer_url, "--model-name", model_name, "--months", "1-2",
                          "--rows", "800", "--fast", "--timeout", "300"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "January" in out and "February" in out and "promoted to production" in out

    client = MlflowClient(mlflow_uri)
    version = client.get_model_version(model_name, "1")
    run = client.get_run(version.run_id)
    assert run.data.metrics["rows_total"] == 800
    assert run.data.metrics["rows_dropped_zero_values"] > 0
    assert run.data.metrics["rows_dropped_target_below_min"] > 0
    assert run.data.metrics["test_mae"] < 1.6
    assert [a.path for a in client.list_artifacts(run.info.run_id, "plots")] == ["plots/residuals.png"]

    mlflow.set_tracking_uri(mlflow_uri)
    model = mlflow.pyfunc.load_model(f"models:/{model_name}/1")
    raw = taxi.generate(3, 5, seed=9)[taxi.FEATURES]
    fares = model.predict(raw)
    assert len(fares) == 5 and all(2 < f < 100 for f in fares)


def test_non_numeric_feature_fails_with_a_clear_error(trainer_url: str, model_name: str,
                                                      base_env: dict[str, str]) -> None:
    frame = taxi.generate(1, 200)
    frame["passenger_count"] = "many"
    path = Path(base_env["DATASETS_DIR"]) / "inputs" / f"{model_name}.csv"
    path.parent.mkdir(exist_ok=True)
    frame.to_csv(path, index=False)
    response = submit(trainer_url, model_name, taxi.spec(str(path), fast=True))
    assert response.status_code == 202, response.text
    job = wait_job(trainer_url, response.json()["job_id"], timeout=120)
    assert job["status"] == "failed"
    assert "feature column 'passenger_count' must be numeric (found 'many')" in job["error"]
