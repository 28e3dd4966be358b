"""The predictor serving a text classifier: readiness, predictions, validation, feedback, drift and hot swaps.

One predictor follows the model through the module; it polls only every hour, so every swap it makes here
comes from an alias event (the polling fallback has its own test). The swap tests come last.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx
import pandas as pd
import pytest
import redis

from mlops_common import mlflow_utils
from mlops_common.events import ModelEvent
from tests.predictor.models import (
    broken_text_pipeline,
    metric_value,
    promote,
    register,
    served_version,
    sms,
    text_pipeline,
    wait_for,
)
from tests.support.auth import ADMIN

SPEC = {"name": "x", "task": "text-classification",
        "data": {"uri": "data/sms_spam.csv", "text_column": "text", "label_column": "label"},
        "metric": {"name": "f1_macro", "higher_is_better": True, "threshold": 0.8},
        "drift": {"psi_threshold": 0.25, "js_threshold": 0.15, "window_size": 400},
        "quality": {"window_size": 50, "feedback_ttl_seconds": 3600}}
SPAM = "WINNER!! Claim your free prize now, call 09061701461 to collect your cash award"
HAM = "Are we still meeting for lunch tomorrow?"


class TextStack:
    def __init__(self, url: str, name: str, mlflow_uri: str, redis_url: str, channel: str) -> None:
        self.url, self.name, self.mlflow_uri, self.redis_url, self.channel = url, name, mlflow_uri, redis_url, channel

    def promote(self, version: str) -> None:
        promote(self.mlflow_uri, self.redis_url, self.channel, self.name, version)

    def predict(self, instances: list, **extra: object) -> httpx.Response:
        return httpx.post(f"{self.url}/predict", json={"instances": instances, **extra}, timeout=10)


@pytest.fixture(scope="module")
def stack(start_predictor: Callable[..., str], mlflow_uri: str, redis_url: str,
          base_env: dict[str, str]) -> TextStack:
    name = f"pred-text-{int(time.time() * 1000) % 10**8}"
    url = start_predictor(name, {"POLL_INTERVAL_SECONDS": "3600", "MAX_INSTANCES": "20",
                                 "MAX_BODY_BYTES": "4096", "MAX_BATCH_WAIT_MS": "2"})
    return TextStack(url, name, mlflow_uri, redis_url, base_env["MODEL_EVENTS_CHANNEL"])


@pytest.fixture(scope="module")
def version_one(stack: TextStack) -> str:
    texts, labels = sms(800)
    model = text_pipeline(texts, labels)
    version = register(stack.mlflow_uri, stack.name, model, pd.DataFrame({"text": texts[:3]}),
                       "text-classification", texts, model.predict(texts), SPEC)
    return version


def test_not_ready_before_any_production_version(stack: TextStack) -> None:
    assert httpx.get(f"{stack.url}/health").status_code == 200
    assert httpx.get(f"{stack.url}/ready").status_code == 503
    refused = stack.predict(["hello"])
    assert refused.status_code == 503
    assert "production" in refused.json()["detail"]
    assert httpx.get(f"{stack.url}/model").json()["serving"] is False
    assert metric_value(stack.url, "predictor_model_loaded", model_name=stack.name) == 0


def test_serves_production_after_the_alias_event(stack: TextStack, version_one: str) -> None:
    stack.promote(version_one)
    wait_for(lambda: served_version(stack.url) == version_one, timeout=30, what="version 1 served")
    assert httpx.get(f"{stack.url}/ready").status_code == 200

    answer = stack.predict([SPAM, HAM])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["predictions"] == ["spam", "ham"]
    assert body["model_name"] == stack.name and body["model_version"] == version_one
    assert len(body["request_id"]) == 32

    with_probs = stack.predict([SPAM], probabilities=True).json()
    assert set(with_probs["probabilities"][0]) == {"ham", "spam"}
    assert with_probs["probabilities"][0]["spam"] > 0.5

    records = stack.predict([{"text": SPAM}]).json()
    assert records["predictions"] == ["spam"]

    model = httpx.get(f"{stack.url}/model").json()
    assert model["model_version"] == version_one and model["task"] == "text-classification"
    assert model["classes"] == ["ham", "spam"] and model["inputs"] == [
        {"name": "text", "type": "string", "required": True}]
    assert model["drift_reference"] is True and model["last_swap"]["reason"] == "event"

    assert metric_value(stack.url, "predictor_model_info", model_name=stack.name, model_version=version_one) == 1
    assert metric_value(stack.url, "predictor_model_loaded", model_name=stack.name) == 1
    assert metric_value(stack.url, "predictor_predictions_total", model_name=stack.name,
                        model_version=version_one, label="spam") >= 2
    assert metric_value(stack.url, "predictor_batch_size_count") >= 3
    assert metric_value(stack.url, "predictor_http_requests_total", handler="/predict", status="200") >= 3


@pytest.mark.parametrize(("body", "status", "reason"), [
    ({"instances": []}, 422, "instances"),
    ({"instances": "hello"}, 422, "expected a list"),
    ({"instances": ["ok", 3]}, 422, "instances[1]"),
    ({"instances": [{"txt": "wrong column"}]}, 422, "instances[0].text"),
    ({"inputs": ["no instances key"]}, 422, "instances"),
    ({"instances": ["x"] * 21}, 422, "at most 20"),
    ({"instances": ["x"], "probabilities": "yes"}, 422, "probabilities"),
    (["not", "an", "object"], 422, "JSON object"),
])
def test_invalid_requests_get_a_4xx_naming_the_problem(stack: TextStack, version_one: str, body: object,
                                                       status: int, reason: str) -> None:
    answer = httpx.post(f"{stack.url}/predict", json=body)
    assert answer.status_code == status, answer.text
    assert reason in answer.json()["detail"]


def test_malformed_and_oversized_bodies(stack: TextStack, version_one: str) -> None:
    malformed = httpx.post(f"{stack.url}/predict", content=b'{"instances": [',
                           headers={"content-type": "application/json"})
    assert malformed.status_code == 400 and "malformed JSON" in malformed.json()["detail"]
    big = httpx.post(f"{stack.url}/predict", json={"instances": ["x" * 5000]})
    assert big.status_code == 413 and "limit" in big.json()["detail"]
    chunked = httpx.post(f"{stack.url}/predict", content=iter([b'{"instances": ["', b"y" * 5000, b'"]}']))
    assert chunked.status_code == 413


def test_feedback_joins_ground_truth_to_predictions(stack: TextStack, version_one: str) -> None:
    first = stack.predict([SPAM]).json()
    second = stack.predict([HAM]).json()
    # Ground truth is a write: it needs a token (role scientist or higher).
    anonymous = httpx.post(f"{stack.url}/feedback", json={"request_id": first["request_id"], "label": "spam"})
    assert anonymous.status_code == 401
    ok = httpx.post(f"{stack.url}/feedback", json={"request_id": first["request_id"], "label": "spam"},
                    headers=ADMIN)
    assert ok.status_code == 200, ok.text
    assert ok.json()["correct"] is True and ok.json()["model_version"] == version_one
    wrong = httpx.post(f"{stack.url}/feedback", json={"request_id": second["request_id"], "label": "spam"},
                       headers=ADMIN)
    assert wrong.status_code == 200 and wrong.json()["correct"] is False
    assert wrong.json()["live_accuracy"] == pytest.approx(0.5)
    assert metric_value(stack.url, "predictor_live_accuracy", model_name=stack.name) == pytest.approx(0.5)
    assert metric_value(stack.url, "predictor_quality_threshold", model_name=stack.name) == pytest.approx(0.8)

    duplicate = httpx.post(f"{stack.url}/feedback", json={"request_id": first["request_id"], "label": "ham"},
                           headers=ADMIN)
    assert duplicate.status_code == 409 and "already" in duplicate.json()["detail"]
    unknown = httpx.post(f"{stack.url}/feedback", json={"request_id": "0" * 32, "label": "ham"}, headers=ADMIN)
    assert unknown.status_code == 404 and "unknown request_id" in unknown.json()["detail"]
    both = httpx.post(f"{stack.url}/feedback", json={"request_id": first["request_id"]}, headers=ADMIN)
    assert both.status_code == 422
    pair = stack.predict([SPAM, HAM]).json()
    needs_index = httpx.post(f"{stack.url}/feedback", json={"request_id": pair["request_id"], "label": "ham"},
                             headers=ADMIN)
    assert needs_index.status_code == 422 and "index" in needs_index.json()["detail"]
    indexed = httpx.post(f"{stack.url}/feedback", json={"request_id": pair["request_id"], "label": "ham", "index": 1},
                         headers=ADMIN)
    assert indexed.status_code == 200 and indexed.json()["correct"] is True
    garbage = httpx.post(f"{stack.url}/feedback", content=b"{",
                         headers={**ADMIN, "content-type": "application/json"})
    assert garbage.status_code == 422
    assert metric_value(stack.url, "predictor_feedback_total", model_name=stack.name, outcome="duplicate") == 1
    assert metric_value(stack.url, "predictor_feedback_total", model_name=stack.name, outcome="unknown") == 1


def test_drift_scores_cross_the_threshold_with_shifted_inputs(stack: TextStack, version_one: str) -> None:
    texts, _ = sms(400, offset=1000)  # unseen messages from the same distribution
    for i in range(0, 400, 20):
        assert stack.predict(texts[i:i + 20]).status_code == 200

    def overall() -> float | None:
        return metric_value(stack.url, "predictor_drift_score", model_name=stack.name, feature="overall")

    wait_for(lambda: metric_value(stack.url, "predictor_drift_window_samples", model_name=stack.name) == 400,
             timeout=10, what="a full window")
    time.sleep(1.2)  # one more drift computation over the full window
    steady = overall()
    assert steady is not None and steady < 0.15, steady
    assert metric_value(stack.url, "predictor_drift_threshold", model_name=stack.name) == pytest.approx(0.15)

    shifted = [f"quarterly blockchain staking yields {i} percent validator rewards compound nightly"
               for i in range(300)]
    for i in range(0, 300, 20):
        assert stack.predict(shifted[i:i + 20]).status_code == 200
    wait_for(lambda: (overall() or 0) > 0.15, timeout=10, what="drift above threshold")
    # Scores are recomputed on a timer while the window fills: the token score may cross a tick after length.
    wait_for(lambda: (metric_value(stack.url, "predictor_drift_score", model_name=stack.name, feature="tokens")
                      or 0) > 0.15, timeout=10, what="token drift above threshold")
    drift = httpx.get(f"{stack.url}/model").json()["drift"]
    assert drift["ready"] and "tokens" in drift["drifted_features"]


def test_hot_swap_under_load_drops_no_request(stack: TextStack, version_one: str) -> None:
    texts, labels = sms(500, offset=2000)
    challenger = text_pipeline(texts, labels, c=1.0)
    version_two = register(stack.mlflow_uri, stack.name, challenger, pd.DataFrame({"text": texts[:2]}),
                           "text-classification", texts, challenger.predict(texts), SPEC)
    failures: list[str] = []
    versions: set[str] = set()
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                try:
                    r = client.post(f"{stack.url}/predict", json={"instances": [SPAM, HAM]})
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                    continue
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text[:200]}")
                else:
                    versions.add(r.json()["model_version"])

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        stack.promote(version_two)
        wait_for(lambda: served_version(stack.url) == version_two, timeout=30, what="version 2 served")
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    assert versions == {version_one, version_two}
    model = httpx.get(f"{stack.url}/model").json()
    assert model["previous_version"] == version_one and model["reloads"]["success"] == 2


def test_a_version_that_fails_to_load_is_not_swapped_in(stack: TextStack) -> None:
    serving = served_version(stack.url)
    broken = register(stack.mlflow_uri, stack.name, broken_text_pipeline(), pd.DataFrame({"text": ["a", "b"]}),
                      "text-classification")
    stack.promote(broken)
    model = wait_for(lambda: (m := httpx.get(f"{stack.url}/model").json())["reloads"]["failure"] >= 1 and m,
                     timeout=30, what="failed reload recorded")
    assert model["model_version"] == serving and model["alias_version"] == broken
    assert "warm-up" in model["failed_versions"][broken]
    answer = stack.predict([SPAM])
    assert answer.status_code == 200 and answer.json()["model_version"] == serving
    assert metric_value(stack.url, "predictor_model_reloads_total", model_name=stack.name, outcome="failure") >= 1

    # Rolling back to the version kept in memory is immediate.
    stack.promote(serving)
    time.sleep(0.5)
    stack.promote(str(int(serving) - 1))
    wait_for(lambda: served_version(stack.url) == str(int(serving) - 1), timeout=10, what="rollback served")


def test_an_announced_challenger_is_prefetched_and_promoted_at_once(stack: TextStack) -> None:
    texts, labels = sms(300, offset=3000)
    version = register(stack.mlflow_uri, stack.name, text_pipeline(texts, labels, c=3.0),
                       pd.DataFrame({"text": texts[:2]}), "text-classification")
    client = mlflow_utils.client(stack.mlflow_uri)
    client.set_registered_model_alias(stack.name, mlflow_utils.CHALLENGER, version)
    conn = redis.Redis.from_url(stack.redis_url)
    conn.publish(stack.channel, ModelEvent(model=stack.name, alias="challenger", version=version).to_json())
    conn.close()
    wait_for(lambda: httpx.get(f"{stack.url}/model").json()["standby_version"] == version, timeout=30,
             what="challenger prefetched")
    assert served_version(stack.url) != version
    stack.promote(version)
    wait_for(lambda: served_version(stack.url) == version, timeout=10, what="prefetched version served")
    swap = httpx.get(f"{stack.url}/model").json()["last_swap"]
    assert "prefetched" in swap["reason"] and swap["to_version"] == version
