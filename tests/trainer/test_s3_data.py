"""A retrain whose ``data.uri`` is ``s3://bucket/key.csv``, end to end through the real stack.

The S3 here is NOT Amazon S3 and not MinIO (this machine has no network and MinIO is not packaged): it is
moto's standalone server (``moto_server`` from ``moto[server]``), a real S3-compatible HTTP server started
as its own process on a free port of 127.0.0.1. boto3 talks to it over HTTP exactly as it would to any
S3-compatible endpoint, so the trainer's real code path is exercised: ``MLFLOW_S3_ENDPOINT_URL`` and the
``AWS_*`` variables, MLflow's S3 client, ``GetObject``, the streamed snapshot, the error of a missing key.
What moto cannot prove is anything specific to AWS itself (IAM policies, real regions, TLS).

The test starts its own trainer-api and Celery worker with the S3 settings, on a queue of their own, so the
session's worker (which has no S3 settings) never takes these jobs; both are stopped at the end, and so is
the S3 server, whose buckets live only in its memory.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
from mlflow.tracking import MlflowClient

from tests.support import processes as p
from tests.trainer.helpers import FAST_CANDIDATES, sms_subset, submit, text_spec, wait_job

pytestmark = pytest.mark.slow

S3_SETTINGS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3_endpoint(log_dir: Path) -> Iterator[str]:
    port = p.free_port()
    proc = p.Process(f"moto-s3-{port}", [str(p.VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                     {}, log_dir).start()
    url = f"http://127.0.0.1:{port}"
    try:
        proc.wait_http(url, timeout=60)
        yield url
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def bucket(s3_endpoint: str, base_env: dict[str, str]) -> dict[str, object]:
    """A bucket holding a stratified 400-row subset of the SMS set as ``sms.csv``; returns its name and bytes."""
    data = sms_subset(Path(base_env["DATASETS_DIR"]) / "inputs" / "sms-s3-400.csv", rows=400, seed=3).read_bytes()
    name = f"mlops-test-{uuid.uuid4().hex[:8]}"
    client = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id=S3_SETTINGS["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=S3_SETTINGS["AWS_SECRET_ACCESS_KEY"],
                          region_name=S3_SETTINGS["AWS_DEFAULT_REGION"])
    client.create_bucket(Bucket=name)
    client.put_object(Bucket=name, Key="sms.csv", Body=data)
    assert client.get_object(Bucket=name, Key="sms.csv")["Body"].read() == data
    return {"name": name, "data": data}


@pytest.fixture(scope="module")
def s3_trainer_url(base_env: dict[str, str], registry_url: str, s3_endpoint: str, log_dir: Path,
                   worker_factory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """trainer-api and one worker with the S3 settings, on their own queue and their own DATASETS_DIR (so the
    snapshot's source is this S3 object, not an earlier upload of the same bytes)."""
    queue = f"training-s3-{uuid.uuid4().hex[:8]}"
    extra = {**S3_SETTINGS, "MLFLOW_S3_ENDPOINT_URL": s3_endpoint, "CELERY_QUEUE": queue,
             "DATASETS_DIR": str(tmp_path_factory.mktemp("datasets-s3"))}
    api, url = p.uvicorn_service("trainer-api-s3", "trainer.api:app", {**base_env, **extra}, log_dir)
    worker = worker_factory(extra)
    try:
        yield url
    finally:
        worker.stop()
        api.stop()


def test_retrain_from_an_s3_object(s3_trainer_url: str, mlflow_uri: str, model_name: str,
                                   bucket: dict[str, object], tmp_path: Path) -> None:
    uri = f"s3://{bucket['name']}/sms.csv"
    data = bucket["data"]
    assert isinstance(data, bytes)
    # a low bar: the gate is not what this tests (one quick candidate on 400 rows)
    response = submit(s3_trainer_url, model_name, text_spec(uri, threshold=0.1, candidates=FAST_CANDIDATES[:1]))
    assert response.status_code == 202, response.text
    job = wait_job(s3_trainer_url, response.json()["job_id"], timeout=300)
    assert job["status"] == "succeeded", job
    assert job["model_version"] == "1" and job["decision"] == "promoted"
    sha = hashlib.sha256(data).hexdigest()
    assert job["dataset"]["sha256"] == sha
    assert job["dataset"]["source"] == uri and job["dataset"]["rows"] == 400

    client = MlflowClient(mlflow_uri)
    assert [v.version for v in client.search_model_versions(f"name = '{model_name}'")] == ["1"]
    run = client.get_run(job["run_id"])
    assert run.data.tags["mlops.dataset_sha256"] == sha
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.digest == sha[:32]
    tags = {t.key: t.value for t in dataset_input.tags}
    assert tags["origin"] == uri and tags["sha256"] == sha and tags["rows"] == "400"
    # the run keeps the exact bytes that were in the bucket
    local = client.download_artifacts(run.info.run_id, f"dataset/{sha}.csv", str(tmp_path))
    assert Path(local).read_bytes() == data


def test_a_missing_key_fails_the_job_and_registers_nothing(s3_trainer_url: str, mlflow_uri: str,
                                                           model_name: str, bucket: dict[str, object]) -> None:
    uri = f"s3://{bucket['name']}/nope.csv"
    response = submit(s3_trainer_url, model_name, text_spec(uri, candidates=FAST_CANDIDATES[:1]))
    assert response.status_code == 202, response.text  # existence is only known once the worker asks S3
    job = wait_job(s3_trainer_url, response.json()["job_id"], timeout=120)
    assert job["status"] == "failed", job
    assert job["error"].startswith(f"data.uri: could not download {uri}: NoSuchKey"), job["error"]
    assert job["model_version"] is None
    assert MlflowClient(mlflow_uri).search_model_versions(f"name = '{model_name}'") == []

    # A URI that names no object is refused at submit, before anything is queued.
    refused = submit(s3_trainer_url, model_name, text_spec(f"s3://{bucket['name']}/", candidates=FAST_CANDIDATES[:1]))
    assert refused.status_code == 422 and "does not name one object" in refused.json()["detail"], refused.text
    assert httpx.get(f"{s3_trainer_url}/health", timeout=10).status_code == 200
