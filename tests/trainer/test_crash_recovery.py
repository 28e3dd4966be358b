"""A worker SIGKILLed in the middle of a job: the job finishes on a restarted worker, and exactly one model
version is registered for it (by registry-proxy, at the gate). Own Redis db, queue and a short visibility
timeout, so the redelivery of the lost message happens within seconds and cannot touch the shared test
worker's messages."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.support import processes as p
from tests.trainer.helpers import sms_subset, submit, wait_job

pytestmark = pytest.mark.slow


@pytest.fixture()
def crash_env(base_env: dict[str, str], registry_url: str) -> Iterator[dict[str, str]]:
    with p.redis_database() as redis_url:
        yield {**base_env, "REDIS_URL": redis_url, "CELERY_BROKER_URL": redis_url,
               "CELERY_QUEUE": f"crash-{uuid.uuid4().hex[:6]}", "CELERY_VISIBILITY_TIMEOUT": "8"}


def start_worker(env: dict[str, str], name: str, log_dir: Path) -> p.Process:
    cmd = [str(p.VENV_BIN / "celery"), "-A", "trainer.celery_app", "worker", "--loglevel", "INFO",
           "--concurrency", "1", "--queues", env["CELERY_QUEUE"], "--hostname", f"{name}@%h"]
    return p.Process(name, cmd, env, log_dir).start()


def test_sigkilled_worker_job_finishes_on_restart_with_one_version(crash_env: dict[str, str], log_dir: Path,
                                                                   mlflow_uri: str, model_name: str) -> None:
    data = sms_subset(Path(crash_env["DATASETS_DIR"]) / "inputs" / "sms-crash.csv", rows=1200, seed=3)
    slow_candidates = [
        {"featurizer": {"type": "word2vec", "params": {"vector_size": 64, "epochs": 150}},
         "estimator": {"type": "knn"}},
        {"featurizer": {"type": "word2vec", "params": {"vector_size": 64, "epochs": 150, "window": 3}},
         "estimator": {"type": "logreg", "params": {"max_iter": 500}}},
        {"featurizer": {"type": "tfidf"}, "estimator": {"type": "logreg", "params": {"C": 10.0}}},
    ]
    spec = {"task": "text-classification",
            "data": {"uri": str(data), "text_column": "text", "label_column": "label"},
            "metric": {"name": "f1_macro", "threshold": 0.5}, "candidates": slow_candidates}
    api, url = p.uvicorn_service("trainer-api-crash", "trainer.api:app", crash_env, log_dir)
    first = start_worker(crash_env, "crash-worker-a", log_dir)
    second: p.Process | None = None
    try:
        job_id = submit(url, model_name, spec).json()["job_id"]
        job = wait_job(url, job_id, timeout=180, until=("succeeded", "failed"), stage_prefix="training candidates")
        assert job["status"] == "running", job  # killed in the middle of training
        first.signal(signal.SIGKILL)
        first.proc.wait(10)

        second = start_worker(crash_env, "crash-worker-b", log_dir)
        job = wait_job(url, job_id, timeout=300)
        assert job["status"] == "succeeded", job
        assert job["model_version"] == "1" and job["decision"] == "promoted"
        assert job["test_split"]["rows"] == job["dataset"]["rows_test"]

        client = MlflowClient(mlflow_uri)
        versions = client.search_model_versions(f"name = '{model_name}'")
        assert [v.version for v in versions] == ["1"]
        assert versions[0].tags["mlops.job_id"] == job_id
        runs = client.search_runs([client.get_run(job["run_id"]).info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{job['run_id']}'")
        statuses = [r.info.status for r in runs]
        assert statuses.count("FINISHED") >= len(slow_candidates)
        assert "RUNNING" not in statuses  # the crashed attempt's candidate run was marked KILLED
    finally:
        for proc in (first, second, api):
            if proc is not None:
                proc.stop()
