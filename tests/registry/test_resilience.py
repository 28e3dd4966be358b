"""Dependencies failing: a dead MLflow is a 503 with a reason, lost database connections are recovered."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg2
import pytest

from tests.registry.helpers import ADMIN, SERVICE, OwnRegistry, aliases, gate_body
from tests.support import processes as p

STALE_MODEL = f"stale-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def registry_without_mlflow(own_registry: OwnRegistry, base_env: dict[str, str], log_dir: Path) -> Iterator[str]:
    """A replica whose MLflow is dead. Before it starts, a notification is left pending as a crash would."""
    conn = psycopg2.connect(own_registry.db_url)
    with conn, conn.cursor() as cur:
        cur.execute("INSERT INTO notifications (created_at, updated_at, event, model_name, status, attempts, payload)"
                    " VALUES (now() - interval '1 hour', now() - interval '1 hour', 'promotion', %s, 'pending', 1,"
                    " %s)", (STALE_MODEL, json.dumps({"event": "promotion", "model": STALE_MODEL, "version": "1"})))
    conn.close()
    dead = f"http://127.0.0.1:{p.free_port()}"
    env = {**base_env, "REGISTRY_DATABASE_URL": own_registry.db_url, "MLFLOW_TRACKING_URI": dead,
           "NOTIFY_WEBHOOK_URL": own_registry.receiver.url}
    proc, url = p.uvicorn_service("registry-proxy-no-mlflow", "registry_proxy.main:app", env, log_dir)
    try:
        yield url
    finally:
        proc.stop()


def test_mlflow_down_is_503_with_a_reason(registry_without_mlflow: str) -> None:
    with httpx.Client(base_url=registry_without_mlflow, timeout=60) as client:
        for response in (client.get("/models"), client.get("/models/anything"),
                         client.post("/models/anything/promote", json={"version": "1"}, headers=ADMIN),
                         client.post("/models/anything/gate", json=gate_body("0" * 32, "models:/m-" + "0" * 32),
                                     headers=SERVICE)):
            assert response.status_code == 503, response.text
            assert "MLflow unavailable" in response.json()["detail"]
        assert client.get("/health").status_code == 200
        ready = client.get("/ready")
        assert ready.status_code == 503 and "mlflow" in ready.json()["problems"]
        assert client.get("/audit").status_code == 200  # the database side still answers
        page = client.get("/ui")
        assert page.status_code == 200 and "MLflow unavailable" in page.text


def test_pending_notifications_are_resent_at_start_up(registry_without_mlflow: str,
                                                      own_registry: OwnRegistry) -> None:
    deadline = time.monotonic() + 30
    while not own_registry.receiver.for_model(STALE_MODEL) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [r["body"]["version"] for r in own_registry.receiver.for_model(STALE_MODEL)] == ["1"]
    with httpx.Client(base_url=registry_without_mlflow, timeout=30) as client:
        while client.get("/notifications", params={"model": STALE_MODEL}).json()[0]["status"] != "sent":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert client.get("/notifications", params={"model": STALE_MODEL}).json()[0]["attempts"] == 2


def test_recovers_after_database_connections_are_killed(own_registry: OwnRegistry, model_name: str) -> None:
    with httpx.Client(base_url=own_registry.url, timeout=60) as client:
        assert client.get("/audit").status_code == 200
        database = own_registry.db_url.rsplit("/", 1)[1]
        admin = psycopg2.connect(p.PG_ADMIN_URL)
        admin.autocommit = True
        try:
            with admin.cursor() as cur:  # what a Postgres restart does to the pool's connections
                cur.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE datname = %s AND pid <> pg_backend_pid()", (database,))
                assert cur.fetchone()[0] >= 1
        finally:
            admin.close()
        assert client.get("/audit").status_code == 200
        assert client.get("/decisions").status_code == 200
        assert client.get("/ready").status_code == 200


@pytest.fixture(scope="module")
def impatient_registry(base_env: dict[str, str], log_dir: Path) -> Iterator[tuple[str, str]]:
    """A registry-proxy of its own database that waits at most 2 s for a table lock; yields (url, db_url)."""
    with p.postgres_database("mlops_test_registry_impatient") as db_url:
        env = {**base_env, "REGISTRY_DATABASE_URL": db_url, "REGISTRY_LOCK_TIMEOUT_SECONDS": "2"}
        proc, url = p.uvicorn_service("registry-proxy-impatient", "registry_proxy.main:app", env, log_dir)
        try:
            yield url, db_url
        finally:
            proc.stop()


def test_a_change_that_fails_part_way_moves_the_aliases_back(impatient_registry: tuple[str, str], register,
                                                             mlflow_client, model_name: str) -> None:
    """Postgres refuses the audit row after MLflow already moved `production` and `previous` (another
    session holds the audit table locked; the proxy gives up after its lock timeout): the answer is a 503,
    the aliases are moved back, and no audit row is written. Once the table is free the same promotion
    works."""
    url, db_url = impatient_registry
    v1, v2 = register(model_name), register(model_name)
    with httpx.Client(base_url=url, timeout=60) as client:
        client.post(f"/models/{model_name}/promote", json={"version": v1}, headers=ADMIN).raise_for_status()
        before = aliases(mlflow_client, model_name)
        assert before == {"production": v1}
        locker = psycopg2.connect(db_url)
        try:
            with locker.cursor() as cur:
                cur.execute("LOCK TABLE audit_log IN ACCESS EXCLUSIVE MODE")
                refused = client.post(f"/models/{model_name}/promote", json={"version": v2, "reason": "x"},
                                      headers=ADMIN)
            locker.rollback()
        finally:
            locker.close()
        assert refused.status_code == 503, refused.text
        assert refused.json()["detail"]
        assert aliases(mlflow_client, model_name) == before
        actions = [r["action"] for r in client.get("/audit", params={"model": model_name}).json()["items"]]
        assert actions == ["promote"]

        promoted = client.post(f"/models/{model_name}/promote", json={"version": v2}, headers=ADMIN)
        assert promoted.status_code == 200, promoted.text
        assert aliases(mlflow_client, model_name) == {"production": v2, "previous": v1}
