"""Bad requests get a clear 4xx (or a failed job with a specific error); the same idempotency key never
trains twice; datasets upload content-addressed. Real trainer-api, worker, registry-proxy, MLflow, Redis."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tests.support import processes as p
from tests.support.auth import ADMIN
from tests.trainer.helpers import sms_subset, submit, text_spec, wait_job


@pytest.fixture(scope="module")
def inputs(base_env: dict[str, str]) -> Path:
    """A folder inside DATASETS_DIR (an allowed data root) for the tests' input files."""
    path = Path(base_env["DATASETS_DIR"]) / "inputs"
    path.mkdir(exist_ok=True)
    return path


def test_unknown_model_without_spec_is_404(trainer_url: str, model_name: str) -> None:
    response = submit(trainer_url, model_name)
    assert response.status_code == 404
    assert "no spec" in response.json()["detail"]


def test_malformed_json_and_bad_fields(trainer_url: str, model_name: str, inputs: Path) -> None:
    malformed = httpx.post(f"{trainer_url}/retrain", content=b'{"model_name": ',
                           headers={**ADMIN, "content-type": "application/json"})
    assert malformed.status_code == 422
    assert "json" in malformed.text.lower()

    typo = submit(trainer_url, "sms-spam", {"metric": {"threshhold": 0.9}})
    assert typo.status_code == 422
    assert "metric.threshhold" in typo.json()["detail"]

    bad_estimator = text_spec(sms_subset(inputs / "a.csv", 100), candidates=[
        {"featurizer": {"type": "tfidf"}, "estimator": {"type": "deep_magic"}}])
    response = submit(trainer_url, model_name, bad_estimator)
    assert response.status_code == 422
    assert "candidates[0].estimator.type" in response.json()["detail"]

    nan = httpx.post(f"{trainer_url}/retrain", content=b'{"model_name": "sms-spam", "spec": {"metric": '
                                                       b'{"threshold": NaN}}}',
                     headers={**ADMIN, "content-type": "application/json"})
    assert nan.status_code == 422 and "spec.metric.threshold: NaN" in nan.json()["detail"]

    bad_metric = {**text_spec(inputs / "a.csv"), "metric": {"name": "mae", "higher_is_better": False}}
    response = submit(trainer_url, model_name, bad_metric)
    assert response.status_code == 422 and "metric.name" in response.json()["detail"]


def test_data_uri_outside_allowed_roots_or_missing(trainer_url: str, model_name: str, inputs: Path) -> None:
    escape = submit(trainer_url, model_name, text_spec("data/../../../../etc/passwd"))
    assert escape.status_code == 422
    assert "outside the allowed data folders" in escape.json()["detail"]

    missing = submit(trainer_url, model_name, text_spec(inputs / "nope.csv"))
    assert missing.status_code == 422 and "no file" in missing.json()["detail"]

    unknown_id = submit(trainer_url, model_name, text_spec("0" * 64))
    assert unknown_id.status_code == 422 and "no uploaded dataset" in unknown_id.json()["detail"]


@pytest.mark.parametrize(("name", "frame_or_bytes", "expected"), [
    ("missing_column", pd.DataFrame({"text": ["hello there"] * 40, "other": ["x", "y"] * 20}),
     "missing column 'label'"),
    ("empty", b"", "empty"),
    ("header_only", b"text,label\n", "no rows"),
    ("single_class", pd.DataFrame({"text": [f"msg {i}" for i in range(40)], "label": ["ham"] * 40}),
     "single class"),
    ("all_null_target", pd.DataFrame({"text": [f"msg {i}" for i in range(40)], "label": [None] * 40}),
     "every value is null"),
    ("too_few_rows", pd.DataFrame({"text": ["a", "b", "c", "d", "e", "f"], "label": ["x", "y"] * 3}),
     "too few rows"),
])
def test_invalid_data_fails_the_job_with_a_clear_error(trainer_url: str, model_name: str, inputs: Path,
                                                      name: str, frame_or_bytes: object, expected: str) -> None:
    path = inputs / f"{model_name}-{name}.csv"
    if isinstance(frame_or_bytes, bytes):
        path.write_bytes(frame_or_bytes)
    else:
        frame_or_bytes.to_csv(path, index=False)
    response = submit(trainer_url, model_name, text_spec(path))
    assert response.status_code == 202, response.text
    job = wait_job(trainer_url, response.json()["job_id"], timeout=120)
    assert job["status"] == "failed"
    assert job["stage"] == "failed"
    assert expected in job["error"], job["error"]
    assert job["model_version"] is None


def test_same_idempotency_key_returns_the_first_job(trainer_url: str, model_name: str, inputs: Path) -> None:
    path = inputs / f"{model_name}-one-class.csv"
    pd.DataFrame({"text": [f"m {i}" for i in range(30)], "label": ["ham"] * 30}).to_csv(path, index=False)
    first = submit(trainer_url, model_name, text_spec(path), idempotency_key="k-1")
    again = submit(trainer_url, model_name, text_spec(path), idempotency_key="k-1")
    other = submit(trainer_url, model_name, text_spec(path), idempotency_key="k-2")
    assert first.status_code == 202 and again.status_code == 200 and other.status_code == 202
    assert again.json()["job_id"] == first.json()["job_id"]
    assert other.json()["job_id"] != first.json()["job_id"]
    listed = httpx.get(f"{trainer_url}/jobs", params={"model_name": model_name}).json()["jobs"]
    assert {j["job_id"] for j in listed} == {first.json()["job_id"], other.json()["job_id"]}
    assert httpx.get(f"{trainer_url}/jobs/does-not-exist").status_code == 404
    detail = httpx.get(f"{trainer_url}/jobs/{first.json()['job_id']}").json()
    assert detail["spec"]["data"]["uri"] == str(path) and detail["source"] == "api"


def test_specs_lists_the_shipped_models(trainer_url: str) -> None:
    specs = {s["name"]: s for s in httpx.get(f"{trainer_url}/specs").json()["specs"]}
    assert specs["sms-spam"]["task"] == "text-classification"
    assert "word2vec-knn" in specs["sms-spam"]["candidates"]


def test_dataset_upload_is_content_addressed(trainer_url: str, tmp_path: Path) -> None:
    frame = pd.DataFrame({"text": ["free prize now", "see you at lunch"] * 15, "label": ["spam", "ham"] * 15})
    data = frame.to_csv(index=False).encode()
    first = httpx.post(f"{trainer_url}/datasets", files={"file": ("tiny.csv", data, "text/csv")},
                       headers=ADMIN)
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["rows"] == 30 and body["columns"] == ["text", "label"]
    assert body["dataset_id"] == body["sha256"] and len(body["sha256"]) == 64
    again = httpx.post(f"{trainer_url}/datasets", files={"file": ("other-name.csv", data, "text/csv")},
                       headers=ADMIN)
    assert again.json()["sha256"] == body["sha256"]

    parquet = io.BytesIO()
    frame.to_parquet(parquet)
    pq = httpx.post(f"{trainer_url}/datasets", files={"file": ("tiny.parquet", parquet.getvalue())}, headers=ADMIN)
    assert pq.status_code == 201 and pq.json()["format"] == "parquet" and pq.json()["rows"] == 30

    listed = httpx.get(f"{trainer_url}/datasets").json()["datasets"]
    assert {body["sha256"], pq.json()["sha256"]} <= {d["sha256"] for d in listed}
    assert httpx.get(f"{trainer_url}/datasets/{body['sha256']}").status_code == 200

    empty = httpx.post(f"{trainer_url}/datasets", files={"file": ("e.csv", b"", "text/csv")}, headers=ADMIN)
    assert empty.status_code == 422 and "empty" in empty.json()["detail"]
    garbage = httpx.post(f"{trainer_url}/datasets", files={"file": ("g.parquet", b"PAR1 not really parquet")},
                      headers=ADMIN)
    assert garbage.status_code == 422 and "unreadable" in garbage.json()["detail"]


def test_broker_down_is_503_and_upload_limit_413(base_env: dict[str, str], log_dir: Path, registry_url: str) -> None:
    dead = f"redis://127.0.0.1:{p.free_port()}/0"
    env = {**base_env, "CELERY_BROKER_URL": dead, "MAX_UPLOAD_BYTES": "2000"}
    proc, url = p.uvicorn_service("trainer-api-nobroker", "trainer.api:app", env, log_dir)
    try:
        response = httpx.post(f"{url}/retrain", json={"model_name": "sms-spam"}, headers=ADMIN, timeout=60)
        assert response.status_code == 503, response.text
        assert "broker" in response.json()["detail"] and "unreachable" in response.json()["detail"]
        assert httpx.get(f"{url}/jobs", params={"model_name": "sms-spam"}).json()["jobs"] == []  # nothing queued

        small = b"text,label\n" + b"hello,ham\n" * 100
        assert httpx.post(f"{url}/datasets", files={"file": ("s.csv", small)}, headers=ADMIN).status_code == 201
        big = b"text,label\n" + b"hello there,ham\n" * 500
        for body in (big, big * 10):  # caught while streaming / refused from Content-Length before reading
            too_big = httpx.post(f"{url}/datasets", files={"file": ("b.csv", body)}, headers=ADMIN)
            assert too_big.status_code == 413 and "limit of 2000 bytes" in too_big.json()["detail"]
    finally:
        proc.stop()
