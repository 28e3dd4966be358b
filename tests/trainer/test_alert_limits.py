"""Alert-triggered retrains are limited per model, whatever the alert group: one per
ALERT_MODEL_COOLDOWN_SECONDS and ALERT_MAX_RETRAINS_PER_DAY a day. Beyond them the alert is acknowledged
(200, "skipped: ...") and no job is queued, so a drift that retraining cannot fix ends with the gate's pending
decision and a person, not with a loop of retrains."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support import processes as p
from tests.support.auth import TRAINER_TOKEN, bearer
from tests.trainer.helpers import sms_subset, text_spec

COOLDOWN = 20  # counted from the moment the job is queued


@pytest.fixture()
def limited_api(base_env: dict[str, str], registry_url: str, log_dir: Path,
                tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(trainer-api URL, model name): tight per-model limits, and a queue of its own that no worker reads (the
    test is about what gets queued, not about training)."""
    name = f"limited-{uuid.uuid4().hex[:6]}"
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(text_spec(sms_subset(tmp_path / "sms.csv", rows=100))))
    env = {**base_env, "MODELS_DIR": str(tmp_path), "CELERY_QUEUE": f"limits-{uuid.uuid4().hex[:8]}",
           "ALERT_COOLDOWN_SECONDS": "3600", "ALERT_MODEL_COOLDOWN_SECONDS": str(COOLDOWN),
           "ALERT_MAX_RETRAINS_PER_DAY": "2"}
    proc, url = p.uvicorn_service("trainer-api-limits", "trainer.api:app", env, log_dir)
    try:
        yield url, name
    finally:
        proc.stop()


def fire(url: str, model: str, alertname: str) -> httpx.Response:
    labels = {"alertname": alertname, "model_name": model, "retrain": "true"}
    body = {"status": "firing", "groupKey": f'{{}}:{{alertname="{alertname}", model_name="{model}"}}',
            "commonLabels": labels, "alerts": [{"status": "firing", "labels": labels}]}
    return httpx.post(f"{url}/alerts/alertmanager", json=body, headers=bearer(TRAINER_TOKEN), timeout=30)


def test_cool_down_and_daily_cap_per_model(limited_api: tuple[str, str]) -> None:
    url, model = limited_api
    first = fire(url, model, "ModelDrift")
    assert first.status_code == 202, first.text
    assert first.json()["retrains"][0]["outcome"] == "enqueued"

    # Another alert (another group) about the same model, within the model's cool-down: acknowledged only.
    quality = fire(url, model, "LiveQualityLow")
    assert quality.status_code == 200, quality.text
    (skipped,) = quality.json()["retrains"]
    assert skipped["outcome"] == "cooldown" and skipped["job_id"] is None
    assert skipped["detail"].startswith("skipped: cool-down")
    assert f"ALERT_MODEL_COOLDOWN_SECONDS={COOLDOWN}" in skipped["detail"]

    # After the cool-down the same group may ask again (the skip did not use up its group cool-down).
    time.sleep(COOLDOWN + 0.5)
    second = fire(url, model, "LiveQualityLow")
    assert second.status_code == 202 and second.json()["retrains"][0]["outcome"] == "enqueued", second.text

    # Two retrains today: the cap holds, even after the cool-down.
    time.sleep(COOLDOWN + 0.5)
    third = fire(url, model, "AnotherAlert")
    assert third.status_code == 200, third.text
    (capped,) = third.json()["retrains"]
    assert capped["outcome"] == "capped" and capped["detail"].startswith("skipped: cap")
    assert "ALERT_MAX_RETRAINS_PER_DAY=2" in capped["detail"]

    jobs = httpx.get(f"{url}/jobs", params={"model_name": model}, timeout=10).json()["jobs"]
    assert sorted(j["job_id"] for j in jobs) == sorted(
        [first.json()["retrains"][0]["job_id"], second.json()["retrains"][0]["job_id"]])
    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    for outcome, count in (("enqueued", 2), ("cooldown", 1), ("capped", 1)):
        assert f'trainer_alert_retrains_total{{model_name="{model}",outcome="{outcome}"}} {count}.0' in metrics
