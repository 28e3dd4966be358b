"""Pending decisions: listed with their evidence, approved or rejected once; incidents; live DORA."""

from __future__ import annotations

import concurrent.futures
from datetime import UTC, datetime, timedelta

import httpx
from mlflow.tracking import MlflowClient

from tests.registry.helpers import ADMIN, SERVICE, EventTap, Jobs, aliases


def _pending(api: httpx.Client, jobs: Jobs, model: str, production_version: str | None = None,
             production_score: float | None = None) -> tuple[int, str]:
    """A job whose challenger (0.6) misses the policy's 0.8 (and so does production, when there is one):
    (decision id, the version registered for it)."""
    body = jobs.report(0.6, production_version=production_version, production_score=production_score)
    answer = api.post(f"/models/{model}/gate", json=body, headers=SERVICE)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outcome"] == "pending_approval", answer.json()
    return answer.json()["decision_id"], answer.json()["version"]


def test_approve_once_promotes(api: httpx.Client, mlflow_client: MlflowClient, tiny_model_id: str,
                               model_name: str, event_tap: EventTap) -> None:
    decision_id, v1 = _pending(api, Jobs(mlflow_client, tiny_model_id), model_name)
    shown = api.get(f"/decisions/{decision_id}").json()
    assert shown["status"] == "pending" and shown["challenger_score"] == 0.6
    assert shown["metric"] == {"name": "f1_macro", "higher_is_better": True, "threshold": 0.8}
    assert shown["dataset_digest"].startswith("sha256:")
    assert shown["links"]["ui"].endswith(f"/ui#decision-{decision_id}")
    assert decision_id in [d["id"] for d in api.get("/decisions", params={"status": "pending"}).json()]

    blocked = api.post(f"/models/{model_name}/promote", json={"version": v1}, headers=ADMIN)
    assert blocked.status_code == 409 and f"/decisions/{decision_id}/approve" in blocked.json()["detail"]
    assert api.post(f"/decisions/{decision_id}/approve", json={"comment": "x"}).status_code == 401

    approved = api.post(f"/decisions/{decision_id}/approve", json={"comment": "ok by me"}, headers=ADMIN)
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved" and approved.json()["production_version"] == v1
    assert aliases(mlflow_client, model_name) == {"production": v1, "challenger": v1}
    assert mlflow_client.get_model_version(model_name, v1).tags["mlops.decision"] == "approved"
    again = api.post(f"/decisions/{decision_id}/approve", headers=ADMIN)
    assert again.status_code == 409 and "already approved" in again.json()["detail"]
    assert api.post(f"/decisions/{decision_id}/reject", headers=ADMIN).status_code == 409
    event_tap.wait_for(lambda evs: any(e["model"] == model_name and e["alias"] == "production" for e in evs))

    actions = [r["action"] for r in api.get("/audit", params={"model": model_name}).json()["items"]]
    assert actions == ["approve", "promote", "gate", "policy.seed"]


def test_reject_keeps_production_and_blocks_promotion(api: httpx.Client, register, mlflow_client: MlflowClient,
                                                      tiny_model_id: str, model_name: str) -> None:
    v1 = register(model_name)
    api.post(f"/models/{model_name}/promote", json={"version": v1}, headers=ADMIN).raise_for_status()
    decision_id, v2 = _pending(api, Jobs(mlflow_client, tiny_model_id), model_name, production_version=v1,
                               production_score=0.7)
    rejected = api.post(f"/decisions/{decision_id}/reject", json={"comment": "too weak"}, headers=ADMIN)
    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
    assert aliases(mlflow_client, model_name)["production"] == v1
    assert api.post(f"/decisions/{decision_id}/approve", headers=ADMIN).status_code == 409
    refused = api.post(f"/models/{model_name}/promote", json={"version": v2}, headers=ADMIN)
    assert refused.status_code == 409 and "rejected" in refused.json()["detail"]
    assert decision_id in [d["id"] for d in api.get("/decisions", params={"status": "rejected"}).json()]


def test_moving_production_supersedes_other_pending_decisions(api: httpx.Client, register,
                                                             mlflow_client: MlflowClient, tiny_model_id: str,
                                                             model_name: str) -> None:
    jobs = Jobs(mlflow_client, tiny_model_id)
    v1 = register(model_name)
    api.post(f"/models/{model_name}/promote", json={"version": v1}, headers=ADMIN).raise_for_status()
    older, v2 = _pending(api, jobs, model_name, production_version=v1, production_score=0.7)
    newer, v3 = _pending(api, jobs, model_name, production_version=v1, production_score=0.7)

    approved = api.post(f"/decisions/{newer}/approve", json={"comment": "v3 it is"}, headers=ADMIN)
    assert approved.status_code == 200 and approved.json()["production_version"] == v3
    stale = api.get(f"/decisions/{older}").json()
    assert stale["status"] == "superseded"
    late = api.post(f"/decisions/{older}/approve", json={"comment": "too late"}, headers=ADMIN)
    assert late.status_code == 409 and "superseded" in late.json()["detail"]
    assert aliases(mlflow_client, model_name)["production"] == v3
    assert mlflow_client.get_model_version(model_name, v2).tags["mlops.decision"] == "superseded"
    assert older in [d["id"] for d in api.get("/decisions", params={"status": "superseded"}).json()]
    assert older not in [d["id"] for d in api.get("/decisions", params={"status": "pending"}).json()]
    audit = api.get("/audit", params={"model": model_name}).json()["items"]
    assert [r["action"] for r in audit][:3] == ["approve", "promote", "supersede"]

    # Rolling back moves production too: a decision made against v3 is superseded by it.
    against_v3, _ = _pending(api, jobs, model_name, production_version=v3, production_score=0.7)
    api.post(f"/models/{model_name}/rollback", json={"reason": "v3 misbehaves"}, headers=ADMIN).raise_for_status()
    assert api.get(f"/decisions/{against_v3}").json()["status"] == "superseded"
    # An explicit promotion of a superseded version is still a human's call.
    promoted = api.post(f"/models/{model_name}/promote", json={"version": v2}, headers=ADMIN)
    assert promoted.status_code == 200 and promoted.json()["production_version"] == v2


def test_unknown_decisions_and_bad_filters(api: httpx.Client) -> None:
    assert api.get("/decisions/999999").status_code == 404
    assert api.post("/decisions/999999/approve", headers=ADMIN).status_code == 404
    assert api.get("/decisions", params={"status": "maybe"}).status_code == 422
    assert api.get("/decisions/abc").status_code == 422


def test_live_dora_lead_time_and_incident_restore(api: httpx.Client, register, mlflow_client: MlflowClient,
                                                  tiny_model_id: str, model_name: str) -> None:
    requested = datetime.now(UTC) - timedelta(hours=1)
    gated = api.post(f"/models/{model_name}/gate", headers=SERVICE, json=Jobs(mlflow_client, tiny_model_id).report(
        0.9, requested_at=requested.isoformat()))
    gated.raise_for_status()
    v1 = gated.json()["version"]
    assert gated.json()["outcome"] == "promoted"
    v2 = register(model_name)
    incident = api.post(f"/models/{model_name}/incidents", json={"reason": "accuracy alert"}, headers=ADMIN)
    assert incident.status_code == 201 and incident.json()["version"] == v1
    assert api.post(f"/models/{model_name}/incidents", json={}, headers=ADMIN).status_code == 422
    assert api.post("/models/nope-nope/incidents", json={"reason": "x"}, headers=ADMIN).status_code == 404
    assert api.get(f"/models/{model_name}/dora").json()["degraded"] is True
    assert api.get("/models/nope-nope/dora").status_code == 404
    api.post(f"/models/{model_name}/promote", json={"version": v2}, headers=ADMIN).raise_for_status()

    figures = api.get(f"/models/{model_name}/dora", params={"window_days": 1}).json()
    assert figures["deployments"] == 2
    assert figures["deployment_frequency_per_day"] == 2.0
    assert figures["lead_time_samples"] == 2
    assert figures["rollbacks"] == 0 and figures["change_failure_ratio"] == 0.0
    assert figures["restores"] == 1 and figures["time_to_restore_seconds"] >= 0
    assert figures["degraded"] is False
    # v1 waited an hour since its retrain request; v2 (no gate call) counts from its registration, seconds ago.
    assert 1800 <= figures["lead_time_seconds"] < 1800 + 600


def test_concurrent_approvals_act_once(api: httpx.Client, mlflow_client: MlflowClient, tiny_model_id: str,
                                       model_name: str, registry_url: str) -> None:
    decision_id, _ = _pending(api, Jobs(mlflow_client, tiny_model_id), model_name)

    def approve(_: int) -> int:
        with httpx.Client(base_url=registry_url, timeout=60) as client:
            return client.post(f"/decisions/{decision_id}/approve", headers=ADMIN).status_code

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        codes = sorted(pool.map(approve, range(3)))
    assert codes == [200, 409, 409]
    assert len(api.get("/audit", params={"model": model_name, "action": "promote"}).json()["items"]) == 1
