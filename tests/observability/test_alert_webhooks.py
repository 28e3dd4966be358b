"""Alert-driven retraining: recorded Grafana and Alertmanager webhook payloads posted to trainer-api end in a
real retrain job (run by the session's Celery worker); resolved alerts and repeats within the cool-down do not.

trainer-api retrains from the model's spec file, so this test runs a second trainer-api (same Redis, queue
and worker as the session's) whose MODELS_DIR holds a small spec for the test's model."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.observability.stack import FAST, text_spec, unique
from tests.support import processes as p
from tests.support.auth import TRAINER_TOKEN, bearer, principal_token
from tests.support.data import sms_subset

pytestmark = pytest.mark.slow
PAYLOADS = Path(__file__).parent / "payloads"
AUTH = bearer(TRAINER_TOKEN)  # the `alerting` principal (role scientist) Grafana and Alertmanager send


def payload(name: str, model_name: str) -> dict[str, Any]:
    """A recorded payload with its model name replaced by ``model_name``."""
    text = (PAYLOADS / f"{name}.json").read_text()
    return json.loads(text.replace("sms-spam", model_name))


@pytest.fixture(scope="module")
def alert_trainer(base_env: dict[str, str], trainer_url: str, log_dir: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(trainer-api URL, model name) for a model whose spec file exists."""
    models_dir = tmp_path_factory.mktemp("obs-models")
    model_name = unique("obs-alerted")
    spec = text_spec(sms_subset(models_dir / "sms.csv", rows=600), 0.5, FAST)
    (models_dir / f"{model_name}.yaml").write_text(yaml.safe_dump(spec))
    # Only the per-group cool-down here (tests/trainer/test_alert_limits.py covers the per-model limits).
    env = {**base_env, "MODELS_DIR": str(models_dir), "ALERT_COOLDOWN_SECONDS": "600",
           "ALERT_MODEL_COOLDOWN_SECONDS": "0"}
    proc, url = p.uvicorn_service("obs-trainer-api", "trainer.api:app", env, log_dir)
    try:
        yield url, model_name
    finally:
        proc.stop()


def post(url: str, path: str, body: dict[str, Any], headers: dict[str, str] | None = AUTH) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, headers=headers or {}, timeout=30)


def jobs_of(url: str, model_name: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{url}/jobs", params={"model_name": model_name}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["jobs"]


def wait_done(url: str, job_id: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = httpx.get(f"{url}/jobs/{job_id}", timeout=10).json()
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def test_webhooks_need_the_token(alert_trainer: tuple[str, str], registry_url: str) -> None:
    url, model_name = alert_trainer
    _, viewer = principal_token(registry_url, "viewer")
    for path in ("/alerts/grafana", "/alerts/alertmanager"):
        assert post(url, path, payload("grafana-drift-firing", model_name), headers=None).status_code == 401
        wrong = {"Authorization": "Bearer not-the-token"}
        assert post(url, path, payload("grafana-drift-firing", model_name), headers=wrong).status_code == 401
        # A reader may not start a retrain.
        assert post(url, path, payload("grafana-drift-firing", model_name), headers=bearer(viewer)).status_code == 403
    assert jobs_of(url, model_name) == []


def test_grafana_and_alertmanager_alerts_retrain_once_per_group(alert_trainer: tuple[str, str]) -> None:
    url, model_name = alert_trainer

    firing = post(url, "/alerts/grafana", payload("grafana-drift-firing", model_name))
    assert firing.status_code == 202, firing.text
    (retrain,) = firing.json()["retrains"]
    assert retrain["model_name"] == model_name and retrain["outcome"] == "enqueued" and retrain["job_id"]
    job = wait_done(url, retrain["job_id"])
    assert job["status"] == "succeeded" and job["model_version"], job
    assert [j["job_id"] for j in jobs_of(url, model_name)] == [retrain["job_id"]]

    # The same alert group again, within the cool-down: no second job.
    again = post(url, "/alerts/grafana", payload("grafana-drift-firing", model_name))
    assert again.status_code == 200, again.text  # acknowledged, nothing queued
    assert [r["outcome"] for r in again.json()["retrains"]] == ["cooldown"]
    # Resolved: nothing to do.
    resolved = post(url, "/alerts/grafana", payload("grafana-drift-resolved", model_name))
    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["retrains"] == [] and resolved.json()["ignored_alerts"] == 1
    assert len(jobs_of(url, model_name)) == 1

    # Alertmanager's payload (another group key): one more job, then its resolution and repeat change nothing.
    am = post(url, "/alerts/alertmanager", payload("alertmanager-drift-firing", model_name))
    assert am.status_code == 202, am.text
    (am_retrain,) = am.json()["retrains"]
    assert am_retrain["outcome"] == "enqueued"
    assert wait_done(url, am_retrain["job_id"])["status"] == "succeeded"
    assert [r["outcome"] for r in post(url, "/alerts/alertmanager",
                                       payload("alertmanager-drift-firing", model_name)).json()["retrains"]] == [
        "cooldown"]
    am_resolved = post(url, "/alerts/alertmanager", payload("alertmanager-drift-resolved", model_name))
    assert am_resolved.json()["retrains"] == []
    assert len(jobs_of(url, model_name)) == 2

    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    assert f'trainer_alert_retrains_total{{model_name="{model_name}",outcome="enqueued"}} 2.0' in metrics
    assert f'trainer_alert_retrains_total{{model_name="{model_name}",outcome="cooldown"}} 2.0' in metrics
