"""Promote, rollback, reads, auth, concurrency: every alias move governed and recorded."""

from __future__ import annotations

import concurrent.futures

import httpx
from mlflow.tracking import MlflowClient

from tests.registry.helpers import ADMIN, SERVICE, EventTap, aliases
from tests.support.auth import bearer, principal_token


def test_reads_are_open_and_show_versions_aliases_metrics(api: httpx.Client, register, model_name: str) -> None:
    v1 = register(model_name, f1_macro=0.81, accuracy=0.9)
    assert api.post(f"/models/{model_name}/promote", json={"version": v1, "reason": "first"},
                    headers=ADMIN).status_code == 200
    names = [m["name"] for m in api.get("/models").json()]
    assert model_name in names
    detail = api.get(f"/models/{model_name}").json()
    assert detail["aliases"] == {"production": v1}
    assert detail["production_version"] == v1
    (version,) = detail["versions"]
    assert version["version"] == v1 and version["aliases"] == ["production"]
    assert version["metrics"] == {"f1_macro": 0.81, "accuracy": 0.9}
    assert version["tags"]["mlops.promoted_via"] == "promote"
    assert api.get(f"/models/{model_name}/versions/{v1}").json()["metrics"]["f1_macro"] == 0.81
    assert api.get(f"/models/{model_name}/versions/42").status_code == 404
    assert api.get(f"/models/{model_name}/versions/abc").status_code == 404
    assert api.get("/models/does-not-exist-anywhere").status_code == 404


def test_mutations_need_a_valid_token(api: httpx.Client, register, model_name: str, registry_url: str) -> None:
    v1 = register(model_name)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}):
        assert api.post(f"/models/{model_name}/promote", json={"version": v1}, headers=headers).status_code == 401
        assert api.post(f"/models/{model_name}/rollback", headers=headers).status_code == 401
        assert api.post("/decisions/1/approve", headers=headers).status_code == 401
    assert api.post(f"/models/{model_name}/promote", json={"version": "77"}, headers=ADMIN).status_code == 404
    assert api.post("/models/nope-nope/promote", json={"version": "1"}, headers=ADMIN).status_code == 404
    assert api.post("/models/nope-nope/rollback", headers=ADMIN).status_code == 404
    # Moving production is an approver's call: the trainer service and a scientist are refused, an approver may.
    _, scientist = principal_token(registry_url, "scientist")
    for headers in (SERVICE, bearer(scientist)):
        assert api.post(f"/models/{model_name}/promote", json={"version": v1}, headers=headers).status_code == 403
    approver, token = principal_token(registry_url, "approver")
    promoted = api.post(f"/models/{model_name}/promote", json={"version": v1}, headers=bearer(token))
    assert promoted.status_code == 200, promoted.text
    assert api.get("/audit", params={"model": model_name}).json()["items"][0]["actor"] == approver


def test_promote_rollback_cycle(api: httpx.Client, register, mlflow_client: MlflowClient, model_name: str,
                                event_tap: EventTap) -> None:
    v1, v2 = register(model_name), register(model_name)
    assert api.post(f"/models/{model_name}/rollback", headers=ADMIN).status_code == 409  # nothing to go back to
    api.post(f"/models/{model_name}/promote", json={"version": v1}, headers=ADMIN).raise_for_status()
    moved = api.post(f"/models/{model_name}/promote", json={"version": v2, "reason": "better"}, headers=ADMIN)
    assert moved.json() == {"model_name": model_name, "production_version": v2, "previous_version": v1,
                            "changed": True}
    again = api.post(f"/models/{model_name}/promote", json={"version": v2}, headers=ADMIN)
    assert again.status_code == 200 and again.json()["changed"] is False
    assert aliases(mlflow_client, model_name) == {"production": v2, "previous": v1}

    back = api.post(f"/models/{model_name}/rollback", json={"reason": "errors up"}, headers=ADMIN)
    assert back.status_code == 200, back.text
    assert back.json()["production_version"] == v1 and back.json()["rolled_back_version"] == v2
    assert aliases(mlflow_client, model_name) == {"production": v1}
    assert api.post(f"/models/{model_name}/rollback", headers=ADMIN).status_code == 409

    rows = api.get("/audit", params={"model": model_name}).json()["items"]
    assert [(r["action"], r["from_version"], r["to_version"], r["actor"]) for r in rows] == [
        ("rollback", v2, v1, "admin"), ("promote", v1, v2, "admin"), ("promote", None, v1, "admin")]
    assert rows[0]["reason"] == "errors up"

    events = event_tap.wait_for(lambda evs: sum(e["model"] == model_name for e in evs) >= 5)
    mine = [(e["alias"], e["version"], e["action"]) for e in events if e["model"] == model_name]
    assert mine == [("production", v1, "set"), ("previous", v1, "set"), ("production", v2, "set"),
                    ("production", v1, "set"), ("previous", None, "delete")]


def test_promoting_a_failed_version_is_refused(api: httpx.Client, register, model_name: str) -> None:
    bad = register(model_name, tags={"mlops.validation": "failed"})
    answer = api.post(f"/models/{model_name}/promote", json={"version": bad}, headers=ADMIN)
    assert answer.status_code == 409 and "validation" in answer.json()["detail"]


def test_concurrent_promotes_end_consistent(api: httpx.Client, register, mlflow_client: MlflowClient,
                                            model_name: str, registry_url: str) -> None:
    v1, v2 = register(model_name), register(model_name)

    def promote(version: str) -> int:
        with httpx.Client(base_url=registry_url, timeout=60) as client:
            return client.post(f"/models/{model_name}/promote", json={"version": version}, headers=ADMIN).status_code

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        codes = list(pool.map(promote, [v1, v2]))
    assert codes == [200, 200]
    state = aliases(mlflow_client, model_name)
    assert {state["production"], state["previous"]} == {v1, v2}
    rows = api.get("/audit", params={"model": model_name, "action": "promote"}).json()["items"]
    assert len(rows) == 2
    newest, oldest = rows
    assert oldest["from_version"] is None and newest["from_version"] == oldest["to_version"]
    assert newest["to_version"] == state["production"]


def test_audit_pages(api: httpx.Client, register, model_name: str) -> None:
    versions = [register(model_name) for _ in range(3)]
    for version in versions:
        api.post(f"/models/{model_name}/promote", json={"version": version}, headers=ADMIN).raise_for_status()
    first = api.get("/audit", params={"model": model_name, "limit": 2}).json()
    assert first["total"] == 3 and len(first["items"]) == 2 and first["next_offset"] == 2
    second = api.get("/audit", params={"model": model_name, "limit": 2, "offset": 2}).json()
    assert [r["to_version"] for r in first["items"] + second["items"]] == versions[::-1]
    assert second["next_offset"] is None
    cursor = api.get("/audit", params={"model": model_name, "limit": 2,
                                       "before_id": first["next_before_id"]}).json()
    assert cursor["items"] == second["items"]
    assert api.get("/audit", params={"limit": 0}).status_code == 422


def test_metrics_count_promotions_and_rollbacks(api: httpx.Client, register, model_name: str) -> None:
    v1, v2 = register(model_name), register(model_name)
    for version in (v1, v2):
        api.post(f"/models/{model_name}/promote", json={"version": version}, headers=ADMIN).raise_for_status()
    api.post(f"/models/{model_name}/rollback", headers=ADMIN).raise_for_status()
    metrics = api.get("/metrics").text
    assert f'registry_promotions_total{{model_name="{model_name}"}} 2.0' in metrics
    assert f'registry_rollbacks_total{{model_name="{model_name}"}} 1.0' in metrics
    assert 'registry_http_requests_total{handler="/models/{name}/promote",method="POST",status="200"}' in metrics
