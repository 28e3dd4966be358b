"""registry-proxy in process, no servers: the app ``create_app()`` builds, with a fake authenticator and a fake
context (its lifespan, which connects to Postgres and MLflow, does not run) and ``dependency_overrides`` for the
governance service. What the HTTP layer itself must get right: auth before any work, one error body, /health
and /ready, the answers' exact shapes, and an OpenAPI schema for every JSON answer."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.exc import DataError, OperationalError

import registry_proxy
from mlops_common.auth import Principal
from mlops_common.errors import Conflict, Unavailable
from registry_proxy import deps
from registry_proxy.main import create_app
from registry_proxy.settings import RegistrySettings

TOKENS = {
    "viewer-token": Principal(name="vic", role="viewer"),
    "approver-token": Principal(name="ann", role="approver"),
    "trainer-token": Principal(name="trainer", role="trainer", kind="service"),
}
APPROVER = {"Authorization": "Bearer approver-token"}
VIEWER = {"Authorization": "Bearer viewer-token"}
TRAINER = {"Authorization": "Bearer trainer-token"}


class Tokens:
    async def principal(self, token: str) -> Principal | None:
        return TOKENS.get(token)


class FakeGovernance:
    """Records what the routes asked for and answers what the real one would."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def promote(self, model: str, version: str, reason: str, actor: str) -> dict[str, Any]:
        self.calls.append(("promote", model, version, reason, actor))
        return {"model_name": model, "production_version": version, "previous_version": None, "changed": True}

    def rollback(self, model: str, reason: str, actor: str) -> dict[str, Any]:
        self.calls.append(("rollback", model, reason, actor))
        raise Conflict(f"model {model!r} has no previous version to roll back to")

    def decisions(self, status: str | None = None, model: str | None = None, limit: int = 100) -> list[dict]:
        self.calls.append(("decisions", status, model, limit))
        return [DECISION]

    def decision(self, decision_id: int) -> dict[str, Any]:
        """Fails the way the database does: an id beyond its integers, NUL in text, the connection lost."""
        errors = {1: DataError("SELECT", {}, Exception("integer out of range")),
                  2: DataError("INSERT", {}, Exception("PostgreSQL text fields cannot contain NUL (0x00) bytes")),
                  3: OperationalError("SELECT", {}, Exception("server closed the connection unexpectedly"))}
        raise errors[decision_id]


DECISION: dict[str, Any] = {
    "id": 7, "model_name": "m", "version": "3", "status": "pending", "job_id": "j1", "run_id": "r1",
    "metric": {"name": "f1_macro", "higher_is_better": True, "threshold": 0.8}, "challenger_score": 0.75,
    "production_version": "2", "production_score": 0.9, "dataset_digest": None, "reason": "misses the bar",
    "requested_at": "2026-01-01T00:00:00+00:00", "created_at": "2026-01-01T00:00:01+00:00", "decided_at": None,
    "decided_by": None, "comment": None, "evidence": {"golden": None, "requested_by": "sam"},
    "links": {"ui": "http://x/ui#decision-7", "version": "http://x/models/m/versions/3"},
}


class BrokenEngine:
    def connect(self) -> None:
        raise ConnectionRefusedError("no database here")


class DeadRegistry:
    def ping(self) -> None:
        raise Unavailable("MLflow unavailable (registered models): connection refused")


class LiveRegistry:
    def ping(self) -> None:
        pass


class LiveEngine:
    def connect(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext(SimpleNamespace(execute=lambda statement: None))


@pytest.fixture()
def governance() -> FakeGovernance:
    return FakeGovernance()


@pytest.fixture()
def app(governance: FakeGovernance) -> FastAPI:
    app = create_app(RegistrySettings(environment="test"))
    app.state.authenticator = Tokens()
    app.state.auth_open_reads = True
    app.state.ctx = SimpleNamespace(settings=RegistrySettings(environment="test"), engine=BrokenEngine(),
                                    registry=DeadRegistry(), sessions=None)
    app.dependency_overrides[deps.governance] = lambda: governance
    return app


@pytest.fixture()
def client(app: FastAPI) -> Iterator[TestClient]:
    yield TestClient(app, raise_server_exceptions=False)


def test_a_mutation_without_a_valid_token_is_refused_before_any_work(client: TestClient,
                                                                     governance: FakeGovernance) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}):
        r = client.post("/models/m/promote", json={"version": "1"}, headers=headers)
        assert r.status_code == 401, r.text
        assert r.headers["www-authenticate"].lower().startswith("bearer")
        assert set(r.json()) == {"detail"} and "bearer token" in r.json()["detail"]
    wrong_role = client.post("/models/m/promote", json={"version": "1"}, headers=VIEWER)
    assert wrong_role.status_code == 403 and "role" in wrong_role.json()["detail"]
    assert client.post("/models/m/gate", json={}, headers=APPROVER).status_code == 403  # the trainer's only
    assert governance.calls == []


def test_health_names_the_service_and_its_version(client: TestClient) -> None:
    r = client.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "service": "registry-proxy", "version": registry_proxy.__version__}


def test_ready_names_what_is_down(app: FastAPI, client: TestClient) -> None:
    down = client.get("/ready")
    assert down.status_code == 503, down.text
    body = down.json()
    assert body["status"] == "unavailable" and body["service"] == "registry-proxy"
    assert body["problems"] == {"database": "ConnectionRefusedError",
                                "mlflow": "MLflow unavailable (registered models): connection refused"}
    assert "database" in body["detail"] and "mlflow" in body["detail"]

    app.state.ctx.registry = LiveRegistry()
    assert client.get("/ready").json()["problems"] == {"database": "ConnectionRefusedError"}

    app.state.ctx.engine = LiveEngine()
    ready = client.get("/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready" and ready.json()["version"] == registry_proxy.__version__


def test_errors_have_one_body(client: TestClient, governance: FakeGovernance) -> None:
    unknown = client.get("/no/such/route")
    assert unknown.status_code == 404 and unknown.json() == {"detail": "Not Found"}
    refused = client.post("/models/m/rollback", json={"reason": "errors up"}, headers=APPROVER)
    assert refused.status_code == 409
    assert refused.json() == {"detail": "model 'm' has no previous version to roll back to"}
    assert governance.calls == [("rollback", "m", "errors up", "ann")]
    invalid = client.post("/models/m/promote", json={"version": "one"}, headers=APPROVER)
    assert invalid.status_code == 422 and invalid.json()["detail"][0]["loc"] == ["body", "version"]


def test_database_failures_are_the_callers_fault_or_a_503(client: TestClient) -> None:
    """A value Postgres cannot store is the request's fault (422 with the reason); a lost database is a 503."""
    out_of_range = client.get("/decisions/1")
    assert out_of_range.status_code == 422
    assert out_of_range.json() == {"detail": "a value does not fit the registry database: integer out of range"}
    nul = client.get("/decisions/2")
    assert nul.status_code == 422 and nul.json() == {"detail": "text fields cannot contain NUL (0x00) characters"}
    gone = client.get("/decisions/3")
    assert gone.status_code == 503 and gone.json() == {"detail": "registry database unavailable, retry later"}


def test_a_job_id_that_cannot_be_searched_for_is_refused_before_any_work(app: FastAPI) -> None:
    del app.dependency_overrides[deps.governance]  # the real service: it must refuse before the database
    client = TestClient(app, raise_server_exceptions=False)
    body = {"job_id": "a' or 'x' = 'x", "run_id": "r" * 32, "model_uri": "models:/m-" + "0" * 32,
            "challenger_metrics": {"f1_macro": 0.9}}
    r = client.post("/models/m/gate", json=body, headers=TRAINER)
    assert r.status_code == 422, r.text
    assert "job_id" in r.json()["detail"] and "a' or 'x' = 'x" in r.json()["detail"]


def test_answers_keep_their_exact_shape(client: TestClient, governance: FakeGovernance) -> None:
    promoted = client.post("/models/m/promote", json={"version": "4", "reason": "better"}, headers=APPROVER)
    assert promoted.status_code == 200, promoted.text
    # No field is added (a null for an undeclared one) and none is dropped.
    assert promoted.json() == {"model_name": "m", "production_version": "4", "previous_version": None,
                               "changed": True}
    listed = client.get("/decisions", params={"status": "pending"})
    assert listed.status_code == 200, listed.text
    assert listed.json() == [DECISION]
    assert governance.calls[-1] == ("decisions", "pending", None, 100)


def test_the_openapi_document_describes_every_json_answer(app: FastAPI) -> None:
    spec = app.openapi()
    schemas = spec["components"]["schemas"]
    checked = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if not status.startswith("2"):
                    continue
                if status == "204":
                    assert "content" not in response, (method, path)
                    continue
                schema = response["content"]["application/json"]["schema"]
                ref = schema.get("$ref") or schema.get("items", {}).get("$ref")
                assert ref, f"{method.upper()} {path} answers {status} without a response model: {schema}"
                assert schemas[ref.rsplit("/", 1)[1]]["properties"], (method, path)
                checked.append((method, path))
    assert ("post", "/models/{name}/promote") in checked and ("get", "/audit") in checked
    assert len(checked) >= 25
