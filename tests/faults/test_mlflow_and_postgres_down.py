"""MLflow down, and Postgres connections lost. This module runs its own MLflow server (own Postgres database,
own artifacts) and its own predictor, registry-proxy (own database), trainer-api and worker over it, so
stopping MLflow or killing database connections touches no other test. The shared Postgres cluster is never
restarted: killing every connection of a database with pg_terminate_backend is what a restart does to the
services' connection pools."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import psycopg2
import pytest

from mlops_common.settings import REPO_ROOT
from tests.faults.support import (
    Load,
    MlflowServer,
    own_mlflow,
    register_text_model,
    served_version,
    set_production,
    stop_all,
    wait_for,
)
from tests.support import processes as p
from tests.support.auth import ADMIN

pytestmark = pytest.mark.slow
POLL_SECONDS = 2.0


class Stack:
    def __init__(self, mlflow: MlflowServer, name: str, versions: list[str], urls: dict[str, str],
                 registry_db: str, data: Path) -> None:
        self.mlflow, self.name, self.versions, self.registry_db, self.data = mlflow, name, versions, registry_db, data
        self.predictor, self.registry, self.trainer = urls["predictor"], urls["registry"], urls["trainer"]

    def retrain(self) -> str:
        body = {"model_name": self.name, "spec": {
            "task": "text-classification",
            "data": {"uri": str(self.data), "text_column": "text", "label_column": "label"},
            "metric": {"name": "f1_macro", "higher_is_better": True, "threshold": 0.5},
            "candidates": [{"featurizer": {"type": "bow"},
                            "estimator": {"type": "knn", "params": {"n_neighbors": 3}}}]}}
        r = httpx.post(f"{self.trainer}/retrain", json=body, headers=ADMIN, timeout=60)
        assert r.status_code == 202, r.text
        return r.json()["job_id"]

    def job(self, job_id: str, timeout: float) -> dict:
        def finished() -> dict | None:
            job = httpx.get(f"{self.trainer}/jobs/{job_id}", timeout=10).json()
            return job if job["status"] in ("succeeded", "failed") else None

        return wait_for(finished, timeout, f"job {job_id} finished", interval=1)


@pytest.fixture(scope="module")
def stack(base_env: dict[str, str], mlflow_credentials: p.MlflowCredentials, log_dir: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("faults-mlflow")
    frame = pd.read_csv(REPO_ROOT / "data" / "sms_spam.csv")
    data = tmp / "sms_small.csv"
    frame.groupby("label").sample(frac=300 / len(frame), random_state=3).to_csv(data, index=False)
    started: list[p.Process] = []
    with (own_mlflow(log_dir, tmp, mlflow_credentials) as mlflow,
          p.postgres_database("mlops_test_faults_registry") as registry_db):
        name = f"faults-mlflow-{uuid.uuid4().hex[:6]}"
        versions = register_text_model(mlflow.uri, name, versions=2)
        set_production(mlflow.uri, name, versions[0])
        env = {**base_env, "MLFLOW_TRACKING_URI": mlflow.uri, "REGISTRY_DATABASE_URL": registry_db,
               "CELERY_QUEUE": f"faults-mlflow-{uuid.uuid4().hex[:6]}", "MODEL_NAME": name,
               "POLL_INTERVAL_SECONDS": str(POLL_SECONDS), "MODEL_EVENTS_CHANNEL": f"faults:{name}",
               # fail an MLflow call within seconds instead of minutes of client-side retries
               "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
               "CANDIDATE_PARALLELISM": "1"}
        try:
            registry, registry_url = p.uvicorn_service("registry-proxy-faults", "registry_proxy.main:app", env,
                                                       log_dir)
            started.append(registry)
            env["REGISTRY_URL"] = registry_url
            predictor, predictor_url = p.uvicorn_service(f"predictor-{name}", "predictor.main:app", env, log_dir)
            started.append(predictor)
            trainer, trainer_url = p.uvicorn_service("trainer-api-faults", "trainer.api:app", env, log_dir)
            started.append(trainer)
            cmd = [str(p.VENV_BIN / "celery"), "-A", "trainer.celery_app", "worker", "--loglevel", "INFO",
                   "--concurrency", "1", "--queues", env["CELERY_QUEUE"], "--hostname", f"faults-{name}@%h"]
            started.append(p.Process(f"trainer-worker-{name}", cmd, env, log_dir).start())
            wait_for(lambda: served_version(predictor_url) == versions[0], 120, "predictor serves version 1")
            yield Stack(mlflow, name, versions, {"predictor": predictor_url, "registry": registry_url,
                                                 "trainer": trainer_url}, registry_db, data)
        finally:
            stop_all(started)


def test_mlflow_down(stack: Stack) -> None:
    """With the MLflow server stopped: the predictor keeps serving its loaded version with zero failed
    requests and /ready stays 200 over several poll intervals; registry-proxy answers reads and a promotion
    with 503 naming MLflow (never 500) and /ready 503; a retrain job fails with a reason naming MLflow.
    When MLflow is back on the same address, registry-proxy answers 200 again without a restart and a
    retrain job succeeds and registers a version."""
    assert httpx.get(f"{stack.registry}/models/{stack.name}", timeout=60).status_code == 200

    with Load(stack.predictor, threads=3) as load:
        time.sleep(1)
        stack.mlflow.stop()
        try:
            deadline = time.monotonic() + 4 * POLL_SECONDS
            while time.monotonic() < deadline:
                ready = httpx.get(f"{stack.predictor}/ready", timeout=10)
                assert ready.status_code == 200, ready.text
                time.sleep(0.5)

            with httpx.Client(base_url=stack.registry, timeout=60) as client:
                for response in (client.get(f"/models/{stack.name}"), client.get("/models"),
                                 client.post(f"/models/{stack.name}/promote", json={"version": stack.versions[1]},
                                             headers=ADMIN)):
                    assert response.status_code == 503, response.text
                    assert "mlflow" in response.json()["detail"].lower(), response.text
                ready = client.get("/ready")
                assert ready.status_code == 503 and "mlflow" in ready.json()["problems"], ready.text

            job = stack.job(stack.retrain(), timeout=240)
            assert job["status"] == "failed", job
            assert stack.mlflow.uri in job["error"] or "mlflow" in job["error"].lower(), job
        finally:
            time.sleep(1)
            stack.mlflow.start()
    print(f"mlflow down: {load.sent} requests, failed job said: {job['error'][:300]}")
    assert load.failures == []
    assert load.sent > 20 and load.versions == {stack.versions[0]}

    wait_for(lambda: httpx.get(f"{stack.registry}/models/{stack.name}", timeout=60).status_code == 200, 60,
             "registry-proxy answers again once MLflow is back")
    job = stack.job(stack.retrain(), timeout=420)
    assert job["status"] == "succeeded", job
    assert job["model_version"], job


def _terminate_connections(db_url: str) -> int:
    database = db_url.rsplit("/", 1)[1]
    admin = psycopg2.connect(p.PG_ADMIN_URL)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = %s AND pid <> pg_backend_pid()", (database,))
            return int(cur.fetchone()[0])
    finally:
        admin.close()


def test_postgres_connections_lost(stack: Stack) -> None:
    """Every connection to registry-proxy's database and to MLflow's database is killed (what a Postgres
    restart does): registry-proxy's next reads, its /ready and a promotion through MLflow succeed without
    restarting anything (within 30 s for MLflow's own pool), and the predictor serves throughout with zero
    failed requests."""
    with httpx.Client(base_url=stack.registry, timeout=60) as client:
        assert client.get("/audit").status_code == 200
        with Load(stack.predictor, threads=2) as load:
            assert _terminate_connections(stack.registry_db) >= 1
            _terminate_connections(stack.mlflow.db_url)
            # registry-proxy's own pool recovers at once: pre-ping replaces the dead connections
            assert client.get("/audit").status_code == 200
            assert client.get("/decisions").status_code == 200
            wait_for(lambda: client.get("/ready").status_code == 200, 30, "registry-proxy ready again")
            promoted = wait_for(lambda: (r := client.post(f"/models/{stack.name}/promote",
                                                          json={"version": stack.versions[1], "reason": "pg test"},
                                                          headers=ADMIN)).status_code == 200 and r,
                                30, "a promotion through MLflow after its connections were killed")
            assert promoted.json()
            wait_for(lambda: served_version(stack.predictor) == stack.versions[1], 60, "new version served")
    assert load.failures == []
    assert load.sent > 10
