"""Webhook notifications: retried with backoff against a receiver that fails first, failures recorded,
promotions never blocked."""

from __future__ import annotations

import time

import httpx
from mlflow.tracking import MlflowClient

from registry_proxy.notifications import slack_body
from tests.registry.helpers import ADMIN, SERVICE, Jobs, OwnRegistry


def _wait(predicate, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def _notifications(client: httpx.Client, model: str) -> list[dict]:
    return client.get("/notifications", params={"model": model}).json()


def test_retries_until_the_receiver_accepts(own_registry: OwnRegistry, mlflow_client: MlflowClient,
                                            tiny_model_id: str, model_name: str) -> None:
    receiver = own_registry.receiver
    receiver.failures_left = 2
    with httpx.Client(base_url=own_registry.url, timeout=60) as client:
        answer = client.post(f"/models/{model_name}/gate", headers=SERVICE,
                             json=Jobs(mlflow_client, tiny_model_id).report(0.5))
        assert answer.status_code == 200, answer.text
        assert answer.json()["outcome"] == "pending_approval"
        decision_id = answer.json()["decision_id"]
        _wait(lambda: [r["answered"] for r in receiver.for_model(model_name)] == [500, 500, 200])
        body = receiver.for_model(model_name)[-1]["body"]
        assert body["event"] == "pending_decision" and body["decision_id"] == decision_id
        assert body["links"]["ui"] == f"http://registry.example/ui#decision-{decision_id}"
        assert body["metrics"]["challenger_score"] == 0.5
        _wait(lambda: _notifications(client, model_name)[0]["status"] == "sent")
        row = _notifications(client, model_name)[0]
        assert row["attempts"] == 3 and row["last_error"] is None
        metrics = client.get("/metrics").text
        assert 'registry_notifications_total{outcome="retried"}' in metrics
        assert 'registry_notifications_total{outcome="sent"}' in metrics


def test_failed_notification_is_recorded_and_does_not_block(own_registry: OwnRegistry, register,
                                                            model_name: str) -> None:
    receiver = own_registry.receiver
    receiver.failures_left = 100
    try:
        with httpx.Client(base_url=own_registry.url, timeout=60) as client:
            version = register(model_name)
            promoted = client.post(f"/models/{model_name}/promote", json={"version": version}, headers=ADMIN)
            assert promoted.status_code == 200 and promoted.json()["production_version"] == version
            _wait(lambda: bool(_notifications(client, model_name))
                  and _notifications(client, model_name)[0]["status"] == "failed")
            row = _notifications(client, model_name)[0]
            assert row["attempts"] == 4 and "HTTP 500" in row["last_error"]
            assert len(receiver.for_model(model_name)) == 4
            audit = client.get("/audit", params={"model": model_name}).json()["items"]
            assert [r["action"] for r in audit] == ["notification_failed", "promote"]
            assert audit[0]["actor"] == "system" and audit[0]["details"]["attempts"] == 4
            assert 'registry_notifications_total{outcome="failed"}' in client.get("/metrics").text
    finally:
        receiver.failures_left = 0


def test_slack_body_is_a_slack_message() -> None:
    body = slack_body({"event": "promotion", "model": "spam", "version": "3", "from_version": "2",
                       "reason": "better", "metrics": {"f1_macro": 0.93},
                       "links": {"ui": "http://r/ui#model-spam"}})
    assert body["text"].startswith("*spam* v3 promoted to production")
    assert "<http://r/ui#model-spam|Open the registry>" in body["text"]
    assert body["blocks"][0]["text"]["type"] == "mrkdwn"
