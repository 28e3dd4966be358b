"""The trainer's gate call: registration, the model's own policy, aliases, decisions, tags, audit rows, events,
idempotency."""

from __future__ import annotations

import httpx
from mlflow.tracking import MlflowClient

from tests.registry.helpers import ADMIN, POLICY, SERVICE, EventTap, Jobs, aliases
from tests.support.auth import TRAINER_TOKEN, bearer


def test_gate_promoted_moves_production_and_publishes(api: httpx.Client, mlflow_client: MlflowClient,
                                                      tiny_model_id: str, model_name: str,
                                                      event_tap: EventTap) -> None:
    jobs = Jobs(mlflow_client, tiny_model_id)
    first = api.post(f"/models/{model_name}/gate", json=jobs.report(0.9), headers=SERVICE)
    assert first.status_code == 200, first.text
    answer = first.json()
    v1 = answer["version"]
    assert (answer["outcome"], answer["decision_id"], answer["production_version"]) == ("promoted", None, v1)
    assert answer["policy"] == POLICY

    body = jobs.report(0.93, production_version=v1, production_score=0.85)
    second = api.post(f"/models/{model_name}/gate", json=body, headers=SERVICE)
    v2 = second.json()["version"]
    assert v2 != v1 and second.json()["production_version"] == v2
    assert aliases(mlflow_client, model_name) == {"production": v2, "previous": v1, "challenger": v2}

    version = mlflow_client.get_model_version(model_name, v2)
    assert version.source == jobs.model_uri or version.model_id == tiny_model_id
    tags = version.tags
    assert tags["mlops.gate.outcome"] == "promoted"
    assert tags["mlops.gate.challenger_score"] == "0.93"
    assert tags["mlops.gate.production_score"] == "0.85"
    assert tags["mlops.gate.threshold"] == "0.8"
    assert tags["mlops.gate.job_id"] == body["job_id"]
    assert tags["mlops.gate.run_id"] == body["run_id"]
    assert tags["mlops.gate.dataset_digest"] == body["dataset_digest"]

    events = event_tap.wait_for(lambda evs: sum(e["model"] == model_name for e in evs) >= 5)
    mine = [(e["alias"], e["version"], e["previous_version"]) for e in events if e["model"] == model_name]
    assert mine == [("challenger", v1, None), ("production", v1, None), ("challenger", v2, v1),
                    ("previous", v1, None), ("production", v2, v1)]

    rows = api.get("/audit", params={"model": model_name}).json()["items"]
    assert [(r["action"], r["from_version"], r["to_version"]) for r in rows] == [
        ("promote", v1, v2), ("gate", v1, v2), ("promote", None, v1), ("gate", None, v1),
        ("policy.seed", None, None)]
    assert rows[1]["actor"] == "trainer"
    assert rows[1]["metrics"]["challenger_score"] == 0.93
    assert rows[1]["details"]["dataset_digest"] == body["dataset_digest"]


def test_gate_is_idempotent_per_job_id(api: httpx.Client, mlflow_client: MlflowClient, tiny_model_id: str,
                                       model_name: str) -> None:
    # The trainer's own reading of the gate is recorded, never trusted: 0.5 misses the policy's 0.8.
    body = Jobs(mlflow_client, tiny_model_id).report(0.5, trainer_outcome="promoted")
    first = api.post(f"/models/{model_name}/gate", json=body, headers=SERVICE).json()
    assert first["outcome"] == "pending_approval" and isinstance(first["decision_id"], int)
    v1 = first["version"]
    again = api.post(f"/models/{model_name}/gate", json=body, headers=SERVICE)
    assert again.status_code == 200 and again.json() == first
    assert [v.version for v in mlflow_client.search_model_versions(f"name = '{model_name}'")] == [v1]
    pending = api.get("/decisions", params={"status": "pending", "model": model_name}).json()
    assert [d["id"] for d in pending] == [first["decision_id"]]
    gates = api.get("/audit", params={"model": model_name, "action": "gate"}).json()["items"]
    assert len(gates) == 1 and gates[0]["details"]["trainer_outcome"] == "promoted"
    assert aliases(mlflow_client, model_name) == {"challenger": v1}


def test_gate_kept_records_only(api: httpx.Client, mlflow_client: MlflowClient, tiny_model_id: str,
                                model_name: str) -> None:
    jobs = Jobs(mlflow_client, tiny_model_id)
    first = api.post(f"/models/{model_name}/gate", json=jobs.report(0.9), headers=SERVICE)
    first.raise_for_status()
    v1 = first.json()["version"]
    answer = api.post(f"/models/{model_name}/gate", json=jobs.report(0.7, production_version=v1,
                                                                      production_score=0.9),
                      headers=SERVICE).json()
    v2 = answer["version"]
    assert (answer["outcome"], answer["decision_id"], answer["production_version"]) == ("kept", None, v1)
    assert aliases(mlflow_client, model_name) == {"production": v1, "challenger": v2}
    assert mlflow_client.get_model_version(model_name, v2).tags["mlops.gate.outcome"] == "kept"


def test_gate_auth_and_validation(api: httpx.Client, mlflow_client: MlflowClient, tiny_model_id: str,
                                  model_name: str) -> None:
    jobs = Jobs(mlflow_client, tiny_model_id)
    url = f"/models/{model_name}/gate"
    assert api.post(url, json=jobs.report()).status_code == 401
    assert api.post(url, json=jobs.report(), headers={"Authorization": "Bearer nope"}).status_code == 401
    # Only the trainer service reports to the gate: not even the admin, nor the alerting principal.
    assert api.post(url, json=jobs.report(), headers=ADMIN).status_code == 403
    assert api.post(url, json=jobs.report(), headers=bearer(TRAINER_TOKEN)).status_code == 403
    no_policy = api.post(url, json=jobs.report(spec_policy=None), headers=SERVICE)
    assert no_policy.status_code == 400 and "no gate policy" in no_policy.json()["detail"]
    no_score = api.post(url, json=jobs.report(challenger_metrics={"accuracy": 0.9}), headers=SERVICE)
    assert no_score.status_code == 400 and "'f1_macro'" in no_score.json()["detail"]
    bad = api.post(url, json=jobs.report(trainer_outcome="maybe"), headers=SERVICE)
    assert bad.status_code == 422 and "trainer_outcome" in bad.text
    assert api.post(url, json={k: v for k, v in jobs.report().items() if k != "model_uri"},
                    headers=SERVICE).status_code == 422
    broken = api.post(url, content=b"{not json", headers={**SERVICE, "Content-Type": "application/json"})
    assert broken.status_code == 422
    assert api.get("/audit", params={"model": model_name}).json()["items"] == []  # nothing half-done
