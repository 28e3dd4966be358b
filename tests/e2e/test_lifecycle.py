"""The whole lifecycle over HTTP against the real stack: retrain → register → gate → promote → serve.

Real MLflow server on Postgres, real Celery worker on Redis, the three services as separate processes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tests.support import data, jobs
from tests.support.auth import ADMIN, bearer, principal_token
from tests.support.data import text_spec
from tests.support.load import Load
from tests.support.registry import wait_served

pytestmark = pytest.mark.slow
MIN_REQUESTS_DURING_APPROVAL = 20
FAST_CANDIDATES = [
    {"featurizer": {"type": "tfidf"},
     "estimator": {"type": "logreg", "params": {"max_iter": 1000, "C": 10.0, "class_weight": "balanced"}}},
    {"featurizer": {"type": "bow"}, "estimator": {"type": "knn", "params": {"n_neighbors": 3}}},
]
WEAK_CANDIDATES = [
    {"featurizer": {"type": "bow", "params": {"max_features": 2}},
     "estimator": {"type": "knn", "params": {"n_neighbors": 1}}},
]


@pytest.fixture(scope="module")
def sms_subset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stratified 1,200-row sample of the real SMS set: big enough to learn, small enough to be quick."""
    return data.sms_subset(tmp_path_factory.mktemp("data") / "sms_subset.csv", rows=1200)


def retrain(trainer_url: str, model_name: str, spec: dict) -> dict:
    """POST /retrain as the test admin (an approver: a spec whose metric block changes the gate policy of a
    model already gated is accepted and recorded by registry-proxy as a policy change in the admin's name)."""
    job = jobs.retrain(trainer_url, model_name, spec, timeout=600)
    print(f"job {job['job_id']}: {job}")
    return job


def test_retrain_gate_promote_serve(
    trainer_url: str, registry_url: str, predictor_factory: Callable[..., str], model_name: str, sms_subset: Path
) -> None:
    predictor = predictor_factory(model_name)

    # No production version yet: the predictor is alive but not ready, and says why.
    assert httpx.get(f"{predictor}/health").status_code == 200
    assert httpx.get(f"{predictor}/ready").status_code == 503
    refused = httpx.post(f"{predictor}/predict", json={"instances": ["hello"]})
    assert refused.status_code == 503
    assert "production" in refused.text

    # 1. First retrain: nothing in production and the challenger meets the threshold → promoted.
    first = retrain(trainer_url, model_name, text_spec(sms_subset, 0.7, FAST_CANDIDATES))
    assert first["status"] == "succeeded", first
    assert first["decision"] == "promoted", first
    assert str(first["model_version"]) == "1"
    assert first["metrics"]["challenger"]["f1_macro"] >= 0.7
    assert first["run_id"]

    wait_served(predictor, "1")
    texts = ["WINNER!! Claim your free prize now, call 09061701461", "Are we still meeting for lunch tomorrow?"]
    answer = httpx.post(f"{predictor}/predict", json={"instances": texts})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["predictions"] == ["spam", "ham"]
    assert str(body["model_version"]) == "1" and body["model_name"] == model_name and body["request_id"]

    empty = httpx.post(f"{predictor}/predict", json={"instances": []})
    assert empty.status_code == 422 and "instances" in empty.text
    not_json = httpx.post(f"{predictor}/predict", content=b"{", headers={"content-type": "application/json"})
    assert 400 <= not_json.status_code < 500

    model = httpx.get(f"{registry_url}/models/{model_name}").json()
    aliases = {alias: str(v["version"]) for v in model["versions"] for alias in v.get("aliases", [])}
    assert aliases["production"] == "1"

    # 2. A weaker challenger on fresh data: production still meets the threshold → kept.
    second = retrain(trainer_url, model_name, text_spec(sms_subset, 0.7, WEAK_CANDIDATES))
    assert second["status"] == "succeeded", second
    assert second["decision"] == "kept", second
    assert str(second["model_version"]) == "2"
    assert second["metrics"]["challenger"]["f1_macro"] < second["metrics"]["production"]["f1_macro"]
    assert str(httpx.get(f"{predictor}/model").json()["model_version"]) == "1"

    # 3. A bar nobody meets → a human is asked; approving it ships version 3 with no failed request.
    # Raising the bar changes the gate policy: a scientist may not, an approver (the admin) may, and
    # registry-proxy records it as a policy change.
    _, scientist = principal_token(registry_url, "scientist")
    refused = httpx.post(f"{trainer_url}/retrain", headers=bearer(scientist), timeout=30, json={
        "model_name": model_name, "spec": text_spec(sms_subset, 0.9999, WEAK_CANDIDATES)})
    assert refused.status_code == 403 and "policy" in refused.text, refused.text
    third = retrain(trainer_url, model_name, text_spec(sms_subset, 0.9999, WEAK_CANDIDATES))
    assert third["status"] == "succeeded", third
    policy = httpx.get(f"{registry_url}/models/{model_name}/policy", timeout=30).json()
    assert (policy["threshold"], policy["set_by"]) == (0.9999, "admin"), policy
    assert third["decision"] == "pending_approval", third
    pending = httpx.get(f"{registry_url}/decisions", params={"status": "pending"}, timeout=30).json()
    decision = next(d for d in pending if d["model_name"] == model_name)
    assert str(decision["version"]) == "3"

    # Four clients post /predict while the approval ships version 3: every request they send must be answered
    # with a 200 (a transport error or a client thread that dies is a failure, see tests/support/load.py).
    with Load(predictor, threads=4, instances=["free entry to win cash"]) as load:
        approved = httpx.post(f"{registry_url}/decisions/{decision['id']}/approve",
                              headers=ADMIN, timeout=60,
                              json={"comment": "approved in the end-to-end test"})
        assert approved.status_code == 200, approved.text
        wait_served(predictor, "3")
        time.sleep(1)
    print(f"approval under load: {load.sent} requests, versions seen {sorted(load.versions)}")
    assert load.failures == []
    assert load.answered == load.sent >= MIN_REQUESTS_DURING_APPROVAL
    assert load.versions == {"1", "3"}


def test_bad_retrain_requests_get_clear_client_errors(trainer_url: str, model_name: str, tmp_path: Path) -> None:
    unknown = httpx.post(f"{trainer_url}/retrain", json={"model_name": f"{model_name}-nospec"}, headers=ADMIN)
    assert unknown.status_code in (404, 422)
    assert "spec" in unknown.text

    malformed = httpx.post(f"{trainer_url}/retrain", content=b'{"model_name": ',
                           headers={**ADMIN, "content-type": "application/json"})
    assert 400 <= malformed.status_code < 500

    missing = tmp_path / "no_label.csv"
    pd.DataFrame({"text": ["a", "b", "c", "d"] * 10, "other": ["x", "y"] * 20}).to_csv(missing, index=False)
    spec = text_spec(missing, 0.5, FAST_CANDIDATES)
    response = httpx.post(f"{trainer_url}/retrain", json={"model_name": model_name, "spec": spec}, headers=ADMIN)
    if response.status_code == 202:  # validated by the worker: the job fails and says which column
        job = jobs.wait_job(trainer_url, response.json()["job_id"], timeout=120)
        assert job["status"] == "failed"
        assert "label" in job["error"]
    else:
        assert response.status_code == 422 and "label" in response.text
