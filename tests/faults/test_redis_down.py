"""Redis down: serving is unaffected, hot reload falls back to polling, POST /retrain answers 503 with a
reason, and a job queued before the outage is still queued after it. The Redis here is a redis-server of
this module's own (on its own port, append-only file on), so stopping it touches no other test."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.faults.support import (
    Load,
    RedisServer,
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
# Noticing the alias takes at most one poll interval; loading and warming the version up comes on top and
# is slow on a busy 2-core CI machine, hence the allowance.
LOAD_ALLOWANCE_SECONDS = 45.0


@pytest.fixture(scope="module")
def own_redis(log_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(log_dir, tmp_path_factory.mktemp("redis"), persistent=True).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def stack(own_redis: RedisServer, base_env: dict[str, str], mlflow_uri: str, registry_url: str,
          log_dir: Path) -> Iterator[dict[str, str]]:
    """A predictor and a trainer-api whose Redis (events, feedback, job store, broker) is ``own_redis``."""
    name = f"faults-redis-{uuid.uuid4().hex[:6]}"
    versions = register_text_model(mlflow_uri, name, versions=2)
    set_production(mlflow_uri, name, versions[0])
    env = {**base_env, "REDIS_URL": own_redis.url, "CELERY_BROKER_URL": own_redis.url,
           "CELERY_QUEUE": f"faults-{uuid.uuid4().hex[:6]}", "MODEL_NAME": name,
           "POLL_INTERVAL_SECONDS": str(POLL_SECONDS)}
    predictor, predictor_url = p.uvicorn_service(f"predictor-{name}", "predictor.main:app", env, log_dir)
    trainer, trainer_url = p.uvicorn_service("trainer-api-own-redis", "trainer.api:app", env, log_dir)
    try:
        wait_for(lambda: served_version(predictor_url) == versions[0], 120, "predictor serves version 1")
        yield {"predictor": predictor_url, "trainer": trainer_url, "name": name, "v2": versions[1],
               "queue": env["CELERY_QUEUE"]}
    finally:
        stop_all([predictor, trainer])


def retrain_body(name: str) -> dict:
    return {"model_name": name, "spec": {
        "task": "text-classification",
        "data": {"uri": "data/sms_spam.csv", "text_column": "text", "label_column": "label"},
        "metric": {"name": "f1_macro", "higher_is_better": True, "threshold": 0.5},
        "candidates": [{"featurizer": {"type": "bow"}, "estimator": {"type": "knn"}}]}}


def test_redis_outage(stack: dict[str, str], own_redis: RedisServer, mlflow_uri: str) -> None:
    """With Redis stopped: (1) /predict keeps answering 200 with zero failed requests under a request loop;
    (2) a production alias moved in MLflow (no event can arrive) is served within the poll interval plus
    the load allowance; (3) POST /retrain answers 503 naming Redis/the broker, and queues nothing;
    (4) the job queued before the outage is still in the broker's queue and the job store when Redis is back."""
    trainer, predictor, name = stack["trainer"], stack["predictor"], stack["name"]

    # A job queued before the outage (no worker consumes this module's queue).
    before = httpx.post(f"{trainer}/retrain", json=retrain_body(name), headers=ADMIN, timeout=60)
    assert before.status_code == 202, before.text
    job_id = before.json()["job_id"]
    conn = own_redis.client()
    assert conn.llen(stack["queue"]) == 1
    conn.close()

    with Load(predictor, threads=3) as load:
        time.sleep(1)
        own_redis.stop()
        time.sleep(3)
        # (3) the API refuses with a reason instead of a 500 or a hang
        refused = httpx.post(f"{trainer}/retrain", json=retrain_body(name), headers=ADMIN, timeout=60)
        assert refused.status_code == 503, refused.text
        assert "Redis" in refused.text or "broker" in refused.text, refused.text
        assert httpx.get(f"{trainer}/health", timeout=10).status_code == 200

        # (2) polling picks up the alias moved in MLflow while no event can be published
        moved_at = time.monotonic()
        set_production(mlflow_uri, name, stack["v2"])
        wait_for(lambda: served_version(predictor) == stack["v2"], POLL_SECONDS + LOAD_ALLOWANCE_SECONDS,
                 "version 2 served by polling while Redis is down")
        swap_seconds = time.monotonic() - moved_at
        assert httpx.get(f"{predictor}/ready", timeout=10).status_code == 200
        time.sleep(2)
    print(f"redis down: {load.sent} requests, swap by polling after {swap_seconds:.1f}s")
    # (1) not a single failed prediction, before, during and after the swap
    assert load.failures == []
    assert load.sent > 20
    assert load.versions == {"1", stack["v2"]}

    # (4) Redis back (same port, its append-only file): the earlier job and its message are still there.
    own_redis.start()
    conn = own_redis.client()
    try:
        assert conn.llen(stack["queue"]) == 1
    finally:
        conn.close()

    def job_after() -> dict | None:
        r = httpx.get(f"{trainer}/jobs/{job_id}", timeout=10)
        return r.json() if r.status_code == 200 else None

    job = wait_for(job_after, 30, "job store answers again", interval=1)
    assert job["status"] == "queued", job
