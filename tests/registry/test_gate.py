"""The trainer's gate call: aliases, decisions, tags, audit rows, events, idempotency."""

from __future__ import annotations

import httpx
from mlflow.tracking import MlflowClient

from tests.registry.helpers import ADMIN, SERVICE, EventTap, aliases, gate_body


def test_gate_promoted_moves_production_and_publishes(api: httpx.Client, register, mlflow_client: MlflowClient,
                                                      model_name: str, event_tap: EventTap) -> None:
    v1 = register(model_name, f1_macro=0.85)
    first = api.post(f"/models/{model_name}/gate", json=gate_body(v1, "promoted"), headers=SERVICE)
    assert first.status_code == 200, first.text
    assert first.json() == {"outcome": "promoted", "decision_id": None, "production_version": v1}

    v2 = register(model_name, f1_macro=0.93)
    body = gate_body(v2, "promoted", challenger_score=0.93, production_version=v1, production_score=0.85)
    second = api.post(f"/models/{model_name}/gate", json=body, headers=SERVICE)
    assert second.json()["production_version"] == v2
    assert aliases(mlflow_client, model_name) == {"production": v2, "previous": v1, "challenger": v2}

    tags = mlflow_client.get_model_version(model_name, v2).tags
    assert tags["mlops.gate.outcome"] == "promoted"
    assert tags["mlops.gate.challenger_score"] == "0.93"
    assert tags["mlops.gate.production_score"] == "0.85"
    assert tags["mlops.gate.threshold"] == "0.8"
    assert tags["mlops.gate.job_id"] == body["job_id"]
    assert tags["mlops.gate.dataset_digest"] == body["dataset_digest"]

    events = event_tap.wait_for(lambda evs: sum(e["model"] == model_name for e in evs) >= 5)
    mine = [(e["alias"], e["version"], e["previous_version"]) for e in events if e["model"] == model_name]
    assert mine == [("challenger", v1, None), ("production", v1, None), ("challenger", v2, v1),
                    ("previous", v1, None), ("production", v2, v1)]

    rows = api.get("/audit", params={"model": model_name}).json()["items"]
    assert [(r["action"], r["from_version"], r["to_version"]) for r in rows] == [
        ("promote", v1, v2), ("gate", v1, v2), ("promote", None, v1), ("gate", None, v1)]
    assert rows[1]["actor"] == "service"
    assert rows[1]["metrics"]["challenger_score"] == 0.93
    assert rows[1]["details"]["dataset_digest"] == body["dataset_digest"]


def test_gate_is_idempotent_per_job_id(api: httpx.Client, register, mlflow_client: MlflowClient,
                                       model_name: str) -> None:
    v1 = register(model_name)
    body = gate_body(v1, "pending_approval", challenger_score=0.5)
    first = api.post(f"/models/{model_name}/gate", json=body, headers=SERVICE).json()
    assert first["outcome"] == "pending_approval" and isinstance(first["decision_id"], int)
    again = api.post(f"/models/{model_name}/gate", json=body, headers=SERVICE)
    assert again.status_code == 200 and again.json() == first
    pending = api.get("/decisions", params={"status": "pending", "model": model_name}).json()
    assert [d["id"] for d in pending] == [first["decision_id"]]
    assert len(api.get("/audit", params={"model": model_name, "action": "gate"}).json()["items"]) == 1
    assert aliases(mlflow_client, model_name) == {"challenger": v1}


def test_gate_kept_records_only(api: httpx.Client, register, mlflow_client: MlflowClient, model_name: str) -> None:
    v1 = register(model_name)
    api.post(f"/models/{model_name}/gate", json=gate_body(v1, "promoted"), headers=SERVICE).raise_for_status()
    v2 = register(model_name, f1_macro=0.7)
    answer = api.post(f"/models/{model_name}/gate", json=gate_body(v2, "kept", challenger_score=0.7,
                                                                   production_version=v1, production_score=0.9),
                      headers=SERVICE).json()
    assert answer == {"outcome": "kept", "decision_id": None, "production_version": v1}
    assert aliases(mlflow_client, model_name) == {"production": v1, "challenger": v2}
    assert mlflow_client.get_model_version(model_name, v2).tags["mlops.gate.outcome"] == "kept"


def test_gate_auth_and_validation(api: httpx.Client, register, model_name: str) -> None:
    v1 = register(model_name)
    url = f"/models/{model_name}/gate"
    assert api.post(url, json=gate_body(v1, "promoted")).status_code == 401
    assert api.post(url, json=gate_body(v1, "promoted"), headers={"Authorization": "Bearer nope"}).status_code == 401
    assert api.post(url, json=gate_body("99", "promoted"), headers=SERVICE).status_code == 404
    assert api.post("/models/no-such-model-x/gate", json=gate_body("1", "promoted"),
                    headers=SERVICE).status_code == 404
    bad = api.post(url, json=gate_body(v1, "maybe"), headers=SERVICE)
    assert bad.status_code == 422 and "outcome" in bad.text
    broken = api.post(url, content=b"{not json", headers={**ADMIN, "Content-Type": "application/json"})
    assert broken.status_code == 422
