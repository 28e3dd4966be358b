"""Alert webhooks (auth, resolved alerts ignored, one retrain per alert group within the cool-down) and
trainer-beat's cron schedules, against real processes (the `mlops` CLI's tests are in tests/client)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml

from mlops_common.spec import ModelSpec
from tests.support import processes as p
from tests.support.auth import TRAINER_TOKEN
from tests.support.waiting import wait_for
from tests.trainer.helpers import text_spec, wait_job
from trainer.jobs import JobStore, connect
from trainer.training import trials


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models/ folder with one spec over a one-class file (its jobs fail fast, which is all we need)."""
    root = tmp_path_factory.mktemp("models")
    data = root / "one-class.csv"
    pd.DataFrame({"text": [f"m {i}" for i in range(30)], "label": ["ham"] * 30}).to_csv(data, index=False)
    (root / "alerted.yaml").write_text(yaml.safe_dump(text_spec(data)))
    return root


@pytest.fixture(scope="module")
def alert_api(base_env: dict[str, str], registry_url: str, trainer_url: str, models_dir: Path,
              log_dir: Path) -> Iterator[str]:
    env = {**base_env, "MODELS_DIR": str(models_dir), "ALERT_COOLDOWN_SECONDS": "300",
           "ALERT_MODEL_COOLDOWN_SECONDS": "0"}
    proc, url = p.uvicorn_service("trainer-api-alerts", "trainer.api:app", env, log_dir)
    yield url
    proc.stop()


def alert(status: str, model: str | None, group: str, retrain: str = "true") -> dict:
    labels = {"alertname": "ModelDrift", "retrain": retrain, **({"model_name": model} if model else {})}
    return {"receiver": "trainer", "status": status, "groupKey": group, "commonLabels": labels,
            "alerts": [{"status": status, "labels": labels, "fingerprint": uuid.uuid4().hex[:16]}]}


def test_alert_webhooks(alert_api: str, base_env: dict[str, str], models_dir: Path) -> None:
    auth = {"Authorization": f"Bearer {TRAINER_TOKEN}"}
    group = f"{{}}:{{alertname=\"ModelDrift\", run=\"{uuid.uuid4().hex}\"}}"
    assert httpx.post(f"{alert_api}/alerts/grafana", json=alert("firing", "alerted", group)).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    refused = httpx.post(f"{alert_api}/alerts/grafana", json=alert("firing", "alerted", group), headers=wrong)
    assert refused.status_code == 401

    resolved = httpx.post(f"{alert_api}/alerts/alertmanager", json=alert("resolved", "alerted", group), headers=auth)
    assert resolved.status_code == 200 and resolved.json() == {"retrains": [], "ignored_alerts": 1}
    # Only alerts labelled retrain="true" (drift, live quality) retrain; a pending-decision alert does not.
    not_for_us = httpx.post(f"{alert_api}/alerts/grafana", json=alert("firing", "alerted", group, retrain="false"),
                            headers=auth)
    assert not_for_us.status_code == 200 and not_for_us.json() == {"retrains": [], "ignored_alerts": 1}

    fired = httpx.post(f"{alert_api}/alerts/grafana", json=alert("firing", "alerted", group), headers=auth)
    assert fired.status_code == 202, fired.text
    [retrain] = fired.json()["retrains"]
    assert retrain["outcome"] == "enqueued" and retrain["model_name"] == "alerted"
    job = wait_job(alert_api, retrain["job_id"], timeout=120)
    assert job["source"] == "alert:grafana"
    assert job["status"] == "failed" and "single class" in job["error"]

    again = httpx.post(f"{alert_api}/alerts/grafana", json=alert("firing", "alerted", group), headers=auth)
    assert again.json()["retrains"][0]["outcome"] == "cooldown"

    unknown = httpx.post(f"{alert_api}/alerts/alertmanager", json=alert("firing", "no-such-model", group),
                         headers=auth)
    assert unknown.json()["retrains"][0]["outcome"] == "rejected"
    assert "no spec" in unknown.json()["retrains"][0]["detail"]

    # A model created through the API has no spec file: the alert retrains it with its last good job's spec.
    store = JobStore(connect(base_env["REDIS_URL"]))
    api_made = f"api-made-{uuid.uuid4().hex[:6]}"
    spec = yaml.safe_load((models_dir / "alerted.yaml").read_text())
    earlier, _ = store.create(api_made, {"name": api_made, **spec})
    store.update(earlier["job_id"], status="succeeded")
    fallback = httpx.post(f"{alert_api}/alerts/grafana", json=alert("firing", api_made, group), headers=auth)
    [retrain] = fallback.json()["retrains"]
    assert retrain["outcome"] == "enqueued", retrain
    assert store.raw(retrain["job_id"])["spec"]["data"]["uri"] == spec["data"]["uri"]

    metrics = httpx.get(f"{alert_api}/metrics").text
    assert 'trainer_alert_retrains_total{model_name="alerted",outcome="enqueued"} 1.0' in metrics
    assert 'trainer_alert_retrains_total{model_name="alerted",outcome="cooldown"} 1.0' in metrics
    bad = httpx.post(f"{alert_api}/alerts/grafana", content=b"not json",
                     headers={**auth, "content-type": "application/json"})
    assert bad.status_code == 422
    no_alerts = httpx.post(f"{alert_api}/alerts/grafana", json={"status": "firing"}, headers=auth)
    assert no_alerts.status_code == 422 and "alerts" in no_alerts.text


def test_grid_expands_into_trials() -> None:
    spec = ModelSpec.model_validate({**text_spec("x.csv"), "name": "m", "candidates": [
        {"featurizer": {"type": "tfidf"}, "estimator": {"type": "logreg"},
         "grid": {"estimator__C": [0.1, 1.0], "featurizer__min_df": [1, 2]}},
        {"featurizer": {"type": "bow"}, "estimator": {"type": "knn"}}]})
    labels = [t.label for t in trials(spec)]
    assert len(labels) == 5 and labels[-1] == "bow-knn"
    assert "tfidf-logreg[C=0.1,min_df=1]" in labels


SCHEDULED = ("cron-model", "cron-other")
UNSCHEDULED = ("cron-never", "cron-invalid")
SLOTS_TO_SEE = 2


def scheduled_slots(jobs: list[dict]) -> list[datetime]:
    """The cron slot of each scheduled job (its idempotency key), oldest first."""
    assert all(j["source"] == "schedule" and j["idempotency_key"].startswith("schedule:") for j in jobs), jobs
    return sorted(datetime.fromisoformat(j["idempotency_key"].removeprefix("schedule:")) for j in jobs)


@pytest.mark.slow
def test_beat_submits_scheduled_retrains(base_env: dict[str, str], log_dir: Path, tmp_path: Path) -> None:
    """Specs with `schedule: "* * * * *"` get one retrain per minute slot from trainer-beat: followed over two
    slots, each of two scheduled models has exactly one job for every minute from its first slot on (none for the
    minute beat started in: the first tick only starts counting), and the specs without a valid schedule none."""
    data = tmp_path / "d.csv"
    pd.DataFrame({"text": ["a b", "c d"] * 20, "label": ["x", "y"] * 20}).to_csv(data, index=False)
    for name in SCHEDULED:
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(text_spec(data, schedule="* * * * *")))
    (tmp_path / "cron-never.yaml").write_text(yaml.safe_dump(text_spec(data)))
    (tmp_path / "cron-invalid.yaml").write_text(yaml.safe_dump(text_spec(data, schedule="every minute")))
    with p.redis_database() as redis_url:
        env = {**base_env, "REDIS_URL": redis_url, "CELERY_BROKER_URL": redis_url, "MODELS_DIR": str(tmp_path),
               "CELERY_QUEUE": f"beat-{uuid.uuid4().hex[:6]}", "SCHEDULE_TICK_SECONDS": "2"}
        beat_cmd = [str(p.VENV_BIN / "celery"), "-A", "trainer.celery_app", "beat", "--loglevel", "INFO",
                    "--schedule", str(tmp_path / "beat-schedule")]
        worker_cmd = [str(p.VENV_BIN / "celery"), "-A", "trainer.celery_app", "worker", "--loglevel", "INFO",
                      "--concurrency", "1", "--queues", env["CELERY_QUEUE"], "--hostname", "beatw@%h"]
        started = datetime.now(UTC)
        beat = p.Process("trainer-beat", beat_cmd, env, log_dir).start()
        worker = p.Process("trainer-worker-beat", worker_cmd, env, log_dir).start()
        store = JobStore(connect(redis_url))

        def jobs() -> dict[str, list[dict]]:
            return {name: store.list(model_name=name) for name in SCHEDULED + UNSCHEDULED}

        try:
            wait_for(lambda: all(len(jobs()[name]) >= SLOTS_TO_SEE for name in SCHEDULED), 240,
                     f"{SLOTS_TO_SEE} scheduled jobs of each of {SCHEDULED}", interval=1)
            # Read them well inside a minute, when every tick of it has had its chance to (wrongly) submit again.
            wait_for(lambda: 10 <= datetime.now(UTC).second <= 50, 30, "the middle of a minute")
            seen, now = jobs(), datetime.now(UTC)
        finally:
            beat.stop()
            worker.stop()
    logs = f"{beat.log_tail()}\n{worker.log_tail()}"
    current_slot = now.replace(second=0, microsecond=0)
    slots = {name: scheduled_slots(seen[name]) for name in SCHEDULED}
    first = slots[SCHEDULED[0]][0]
    expected = [first + timedelta(minutes=i) for i in range(int((current_slot - first) / timedelta(minutes=1)) + 1)]
    assert first > started, (first, started, logs)
    assert len(expected) >= SLOTS_TO_SEE, (expected, logs)
    for name in SCHEDULED:
        assert slots[name] == expected, (name, slots[name], expected, logs)
    for name in UNSCHEDULED:
        assert seen[name] == [], (name, seen[name])
