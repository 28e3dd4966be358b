"""trainer-api in process (fastapi.testclient), no servers started: the app from ``create_app`` on a Redis db
of its own (claimed and flushed by tests.support.processes.redis_database), with an authenticator that knows
two tokens instead of asking registry-proxy. Auth refusals, the one error body, health and readiness, the
answers' shapes and the OpenAPI's response schemas."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from mlops_common.auth import Principal
from tests.support import processes as p
from trainer import __version__
from trainer.api import create_app
from trainer.context import TrainerContext, build_context
from trainer.jobs import PUBLIC_FIELDS
from trainer.settings import TrainerSettings

TOKENS = {"scientist-token": Principal(name="sam", role="scientist"),
          "viewer-token": Principal(name="val", role="viewer")}
SCIENTIST = {"Authorization": "Bearer scientist-token"}
VIEWER = {"Authorization": "Bearer viewer-token"}
MAX_UPLOAD = 4000


class KnownTokens:
    async def principal(self, token: str) -> Principal | None:
        return TOKENS.get(token)


def with_known_tokens(settings: TrainerSettings) -> TrainerContext:
    return dataclasses.replace(build_context(settings), authenticator=KnownTokens())


@pytest.fixture(scope="module")
def own_redis_url() -> Iterator[str]:
    with p.redis_database() as url:
        yield url


def settings_for(redis_url: str, root: Path, **extra: object) -> TrainerSettings:
    (root / "models").mkdir(exist_ok=True)
    return TrainerSettings(environment="test", redis_url=redis_url, celery_broker_url=redis_url,
                           models_dir=root / "models", datasets_dir=root / "datasets", auth_open_reads=False,
                           registry_url="http://127.0.0.1:9", max_upload_bytes=MAX_UPLOAD, log_format="text",
                           **extra)


@pytest.fixture(scope="module")
def client(own_redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    app = create_app(settings_for(own_redis_url, tmp_path_factory.mktemp("trainer")), build=with_known_tokens)
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture()
def ctx(client: TestClient) -> TrainerContext:
    context: TrainerContext = client.app.state.ctx  # type: ignore[attr-defined]
    return context


def test_health_names_the_service_and_its_version(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "service": "trainer-api", "version": __version__}


def test_ready_when_the_job_store_answers(client: TestClient) -> None:
    response = client.get("/ready")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready" and body["service"] == "trainer-api" and body["version"] == __version__


def test_job_store_down_is_503_not_ready(tmp_path: Path) -> None:
    dead = f"redis://127.0.0.1:{p.free_port()}/0"
    app = create_app(settings_for(dead, tmp_path), build=with_known_tokens)
    with TestClient(app) as down:
        ready = down.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["status"] == "unavailable" and "job_store" in ready.json()["problems"]
        assert "job_store" in ready.json()["detail"]
        jobs = down.get("/jobs", headers=VIEWER)
        assert jobs.status_code == 503
        assert jobs.json()["detail"].startswith("the job store (Redis) is unreachable")
        assert down.get("/health").status_code == 200


def test_retrain_needs_a_token_of_a_scientist(client: TestClient) -> None:
    body = {"model_name": "sms-spam"}
    anonymous = client.post("/retrain", json=body)
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].lower().startswith("bearer")
    assert list(anonymous.json()) == ["detail"] and "bearer token" in anonymous.json()["detail"]
    unknown = client.post("/retrain", json=body, headers={"Authorization": "Bearer nobody"})
    assert unknown.status_code == 401
    viewer = client.post("/retrain", json=body, headers=VIEWER)
    assert viewer.status_code == 403 and "role viewer" in viewer.json()["detail"]


def test_refusals_have_the_one_error_body(client: TestClient) -> None:
    """A refused retrain (``Rejected``), an unknown job or dataset, and an unknown route: ``{"detail": ...}``."""
    no_spec = client.post("/retrain", json={"model_name": "no-such-model"}, headers=SCIENTIST)
    assert no_spec.status_code == 404 and list(no_spec.json()) == ["detail"] and "no spec" in no_spec.json()["detail"]
    bad_spec = client.post("/retrain", content=b'{"model_name": "m", "spec": {"metric": {"threshold": Infinity}}}',
                           headers={**SCIENTIST, "content-type": "application/json"})
    assert bad_spec.status_code == 422 and "NaN and infinities" in bad_spec.json()["detail"]
    assert client.get("/jobs/nope", headers=VIEWER).json() == {"detail": "no job 'nope'"}
    assert client.get("/jobs/nope", headers=VIEWER).status_code == 404
    assert client.get("/jobs/" + "x" * 65, headers=VIEWER).status_code == 404
    assert client.get("/datasets/nope", headers=VIEWER).json() == {"detail": "no dataset 'nope'"}
    assert client.get("/no-such-route").json() == {"detail": "Not Found"}


def test_a_job_reads_back_with_every_public_field(client: TestClient, ctx: TrainerContext) -> None:
    spec = {"name": "shown", "task": "text-classification"}
    job, created = ctx.store.create("shown", spec, source="schedule", idempotency_key="k")
    assert created
    ctx.store.update(job["job_id"], status="failed", stage="failed", error="single class",
                     candidates=[{"candidate": "bow-knn", "status": "failed", "run_id": None, "score": None,
                                  "seconds": 0.1, "error": "boom"}],
                     golden_lookup_error="registry-proxy unreachable")
    expected = ctx.store.get(job["job_id"])
    assert expected is not None

    detail = client.get(f"/jobs/{job['job_id']}", headers=VIEWER)
    assert detail.status_code == 200
    assert detail.json() == {**expected, "spec": spec}
    assert set(detail.json()) == {*PUBLIC_FIELDS, "golden", "spec"}
    assert detail.json()["golden"] == {"sha256": None, "lookup_error": "registry-proxy unreachable"}

    listed = client.get("/jobs", params={"model_name": "shown"}, headers=VIEWER)
    assert listed.json() == {"jobs": [expected]}
    assert client.get("/jobs", params={"status": "running", "model_name": "shown"}, headers=VIEWER).json() == {
        "jobs": []}


def test_alert_for_a_model_without_spec_is_rejected_and_does_not_start_a_cooldown(client: TestClient) -> None:
    note = {"groupKey": "g-1", "alerts": [
        {"status": "firing", "labels": {"model_name": "unknown-model", "retrain": "true"}},
        {"status": "resolved", "labels": {"model_name": "unknown-model", "retrain": "true"}}]}
    for _ in range(2):  # refused, so the group may try again: never "cooldown"
        answer = client.post("/alerts/grafana", json=note, headers=SCIENTIST)
        assert answer.status_code == 200  # acknowledged: nothing was queued
        [retrain] = answer.json()["retrains"]
        assert retrain["outcome"] == "rejected" and retrain["job_id"] is None and "no spec" in retrain["detail"]
        assert answer.json()["ignored_alerts"] == 1


def test_job_store_owns_alert_cooldowns_and_schedule_slots(ctx: TrainerContext) -> None:
    from datetime import UTC, datetime

    assert ctx.store.claim_alert("m", "group", 60)
    assert not ctx.store.claim_alert("m", "group", 60)
    assert ctx.store.claim_alert("m", "other group", 60)
    ctx.store.release_alert("m", "group")
    assert ctx.store.claim_alert("m", "group", 60)

    assert ctx.store.schedule_slot("cron") is None
    slot = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    ctx.store.set_schedule_slot("cron", slot)
    assert ctx.store.schedule_slot("cron") == slot


def test_worker_metrics_are_scraped_from_the_job_store(client: TestClient, ctx: TrainerContext) -> None:
    ctx.store.record_job("scraped", "failed", 42.0)
    ctx.store.record_decision("scraped", "kept")
    ctx.store.record_candidates("scraped", {"bow-knn": 0.5})
    metrics = client.get("/metrics").text
    assert 'trainer_jobs_total{model_name="scraped",status="failed"} 1.0' in metrics
    assert 'trainer_gate_decisions_total{decision="kept",model_name="scraped"} 1.0' in metrics \
        or 'trainer_gate_decisions_total{model_name="scraped",decision="kept"} 1.0' in metrics
    assert 'trainer_candidate_score{candidate="bow-knn",model_name="scraped"} 0.5' in metrics \
        or 'trainer_candidate_score{model_name="scraped",candidate="bow-knn"} 0.5' in metrics
    assert 'trainer_job_duration_seconds_bucket{le="30"} 0.0' in metrics
    assert 'trainer_job_duration_seconds_bucket{le="60"} 1.0' in metrics
    assert "trainer_job_duration_seconds_sum 42.0" in metrics
    assert "trainer_jobs_running 0.0" in metrics


def test_dataset_upload_list_and_size_limit(client: TestClient) -> None:
    data = b"text,label\n" + b"hello,ham\nwin cash,spam\n" * 10
    uploaded = client.post("/datasets", files={"file": ("tiny.csv", data, "text/csv")}, headers=SCIENTIST)
    assert uploaded.status_code == 201, uploaded.text
    body = uploaded.json()
    assert set(body) == {"dataset_id", "sha256", "format", "rows", "columns", "source", "created_at", "size_bytes"}
    assert body["rows"] == 20 and body["columns"] == ["text", "label"] and body["source"] == "upload:tiny.csv"
    assert client.get(f"/datasets/{body['sha256']}", headers=VIEWER).json() == body
    assert body in client.get("/datasets", headers=VIEWER).json()["datasets"]

    refused = client.post("/datasets", files={"file": ("../x.csv", data)}, headers=SCIENTIST)
    assert refused.status_code == 422 and "plain file name" in refused.json()["detail"]
    streamed = client.post("/datasets", files={"file": ("big.csv", data * 20)}, headers=SCIENTIST)
    assert streamed.status_code == 413 and f"limit of {MAX_UPLOAD} bytes" in streamed.json()["detail"]
    announced = client.post("/datasets", content=b"x" * (MAX_UPLOAD + 70 * 1024), headers={
        **SCIENTIST, "content-type": "multipart/form-data; boundary=b"})
    assert announced.status_code == 413 and announced.json() == {
        "detail": f"the upload is larger than the limit of {MAX_UPLOAD} bytes"}


def test_openapi_documents_every_answer(client: TestClient) -> None:
    """Every JSON route's success answer is a named schema (a response model), not a bare object."""
    document = client.get("/openapi.json").json()
    operations = [(method, path, op) for path, item in document["paths"].items() for method, op in item.items()]
    assert {(m, path) for m, path, _ in operations} >= {
        ("post", "/retrain"), ("get", "/jobs"), ("get", "/jobs/{job_id}"), ("get", "/specs"),
        ("post", "/datasets"), ("get", "/datasets"), ("get", "/datasets/{dataset_id}"),
        ("post", "/alerts/grafana"), ("post", "/alerts/alertmanager"), ("get", "/health"), ("get", "/ready")}
    for method, path, op in operations:
        success = [code for code in op["responses"] if code.startswith("2")]
        assert success, (method, path)
        for code in success:
            schema = op["responses"][code]["content"]["application/json"]["schema"]
            assert "$ref" in schema, (method, path, code, schema)
    job = document["components"]["schemas"]["JobView"]["properties"]
    assert set(PUBLIC_FIELDS) | {"golden"} == set(job)


def test_redis_error_inside_a_route_is_503(client: TestClient, ctx: TrainerContext,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    def down(*_: object, **__: object) -> None:
        raise redis.ConnectionError("Connection refused")

    monkeypatch.setattr(ctx.store, "list", down)
    response = client.get("/jobs", headers=VIEWER)
    assert response.status_code == 503
    assert response.json() == {"detail": "the job store (Redis) is unreachable: Connection refused"}
