"""The predictor follows a model's rollout split: a predictor process, a real MLflow server and Redis.

The test sets the registered model's ``mlops.rollout`` tag with MlflowClient and publishes the ``rollout``
ModelEvent, as registry-proxy does. A canary at weight 30 serves about 30 % of the requests without a key, a
given ``X-Rollout-Key`` always gets the same version, explicit version routes are never re-routed, and every
answer says which version served it (body and ``X-Model-Version``); weight 0, the tag removed or an
unreadable tag: production only, never an error.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pandas as pd
import pytest
import redis

from mlops_common import mlflow_utils
from mlops_common.events import ModelEvent
from mlops_common.names import Tag
from mlops_common.rollout import ROLLOUT_EVENT_ALIAS, ROLLOUT_KEY_HEADER, CanarySplit, RolloutSplit, bucket
from tests.predictor.models import metric_value, promote, register, sms, text_pipeline, wait_for
from tests.support.registry import copies_of

SPAM = "WINNER!! Claim your free prize now, call 09061701461 to collect your cash award"
POLL_SECONDS = 10.0


@dataclass
class Rollout:
    url: str
    name: str
    mlflow_uri: str
    redis_url: str
    channel: str
    production: str
    canary: str

    def set_tag(self, value: str | None, announce: bool = True) -> None:
        client = mlflow_utils.client(self.mlflow_uri)
        if value is None:
            client.delete_registered_model_tag(self.name, Tag.ROLLOUT)
        else:
            client.set_registered_model_tag(self.name, Tag.ROLLOUT, value)
        if announce:
            conn = redis.Redis.from_url(self.redis_url)
            conn.publish(self.channel, ModelEvent(model=self.name, alias=ROLLOUT_EVENT_ALIAS, version=self.canary,
                                                  action="rollout").to_json())
            conn.close()

    def canary_at(self, weight: int, announce: bool = True) -> None:
        self.set_tag(RolloutSplit(canary=CanarySplit(version=self.canary, weight=weight)).to_tag(), announce)

    def followed(self) -> dict | None:
        return httpx.get(f"{self.url}/model", timeout=5).json()["rollout"]

    def predict(self, path: str = "/predict", key: str | None = None) -> httpx.Response:
        headers = {ROLLOUT_KEY_HEADER: key} if key is not None else {}
        answer = httpx.post(f"{self.url}{path}", json={"instances": [SPAM]}, headers=headers, timeout=10)
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-model-version"] == answer.json()["model_version"]
        return answer

    def versions(self, n: int, path: str = "/predict") -> Counter[str]:
        return Counter(self.predict(path).json()["model_version"] for _ in range(n))

    def production_only(self) -> None:
        assert self.versions(40) == {self.production: 40}


@pytest.fixture(scope="module")
def rollout(start_predictor: Callable[..., str], mlflow_uri: str, redis_url: str,
            base_env: dict[str, str]) -> Rollout:
    name = f"rollout-sms-{int(time.time() * 1000) % 10**8}"
    texts, labels = sms(300)
    first = register(mlflow_uri, name, text_pipeline(texts, labels), pd.DataFrame({"text": texts[:2]}),
                     "text-classification")
    (second,) = copies_of(mlflow_uri, name, first, 1)
    channel = base_env["MODEL_EVENTS_CHANNEL"]
    promote(mlflow_uri, redis_url, channel, name, first)
    url = start_predictor(name, {"POLL_INTERVAL_SECONDS": str(POLL_SECONDS), "LOAD_IN_SUBPROCESS": "false"})
    wait_for(lambda: httpx.get(f"{url}/ready", timeout=5).status_code == 200, timeout=90, what="served")
    return Rollout(url, name, mlflow_uri, redis_url, channel, first, second)


def wait_canary_serving(rollout: Rollout) -> None:
    wait_for(lambda: rollout.canary in rollout.versions(10), timeout=60, what="the canary loaded and serving")


def test_without_a_split_production_answers(rollout: Rollout) -> None:
    assert rollout.followed() == {"canary": None, "shadow": None}
    rollout.production_only()


def test_a_canary_at_30_serves_about_30_percent_followed_on_the_event(rollout: Rollout) -> None:
    rollout.canary_at(30)
    started = time.monotonic()
    wait_for(lambda: (rollout.followed() or {}).get("canary") is not None, timeout=POLL_SECONDS, what="split")
    # The event, not the poll (every 10 s): well under a second on an idle machine, 1.3 s measured at load 30.
    assert time.monotonic() - started < 2.5
    wait_canary_serving(rollout)
    counts = rollout.versions(400)
    assert set(counts) == {rollout.production, rollout.canary}
    # Binomial(400, 0.3): mean 120, sd 9.2; 80..160 is more than 4 sd either side.
    assert 80 <= counts[rollout.canary] <= 160, counts
    # Every prediction route of the model follows the split; explicit versions are never re-routed.
    assert rollout.canary in rollout.versions(60, f"/models/{rollout.name}/predict")
    explicit = f"/models/{rollout.name}/versions/{rollout.production}/predict"
    assert rollout.versions(30, explicit) == {rollout.production: 30}
    v2 = Counter(httpx.post(f"{rollout.url}/v2/models/{rollout.name}/infer", timeout=10, json={
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [SPAM]}]}).headers["x-model-version"]
        for _ in range(60))
    assert set(v2) == {rollout.production, rollout.canary}, v2
    invocations = Counter(httpx.post(f"{rollout.url}/invocations", timeout=10, json={
        "dataframe_split": {"columns": ["text"], "data": [[SPAM]]}}).headers["x-model-version"] for _ in range(60))
    assert set(invocations) == {rollout.production, rollout.canary}, invocations
    # The per-version series registry-proxy's canary analysis reads.
    for version in (rollout.production, rollout.canary):
        assert (metric_value(rollout.url, "predictor_model_requests_total", model_name=rollout.name,
                             model_version=version, status="200") or 0) > 0
        assert (metric_value(rollout.url, "predictor_model_request_duration_seconds_count",
                             model_name=rollout.name, model_version=version) or 0) > 0


def test_a_rollout_key_always_gets_the_same_version(rollout: Rollout) -> None:
    rollout.canary_at(30)
    wait_canary_serving(rollout)
    keys = {key: bucket(key) < 30 for key in (f"user-{i}" for i in range(12))}
    assert any(keys.values()) and not all(keys.values())  # some keys on each side
    for key, canary in keys.items():
        seen = {rollout.predict(key=key).json()["model_version"] for _ in range(5)}
        assert seen == {rollout.canary if canary else rollout.production}, key


def test_weight_0_and_a_removed_tag_mean_production_only(rollout: Rollout) -> None:
    rollout.canary_at(0)
    wait_for(lambda: ((rollout.followed() or {}).get("canary") or {}).get("weight") == 0, timeout=5, what="weight 0")
    rollout.production_only()
    rollout.canary_at(50)
    wait_canary_serving(rollout)
    rollout.set_tag(None)
    wait_for(lambda: rollout.followed() == {"canary": None, "shadow": None}, timeout=5, what="tag removed")
    rollout.production_only()


def test_the_split_is_followed_on_the_poll_without_events(rollout: Rollout) -> None:
    rollout.canary_at(100, announce=False)
    wait_for(lambda: (rollout.followed() or {}).get("canary") is not None, timeout=POLL_SECONDS + 5,
             what="split read on the poll")
    wait_canary_serving(rollout)
    assert rollout.versions(20) == {rollout.canary: 20}
    rollout.set_tag(None, announce=False)
    wait_for(lambda: rollout.followed() == {"canary": None, "shadow": None}, timeout=POLL_SECONDS + 5,
             what="removal read on the poll")
    rollout.production_only()


def test_an_unreadable_tag_is_ignored(rollout: Rollout) -> None:
    rollout.canary_at(100)
    wait_canary_serving(rollout)
    rollout.set_tag('{"canary": {"version": "2", "weight": 250}}')
    wait_for(lambda: rollout.followed() == {"canary": None, "shadow": None}, timeout=5, what="bad tag ignored")
    rollout.production_only()
    rollout.set_tag("not json at all")
    time.sleep(1)
    rollout.production_only()
    assert httpx.get(f"{rollout.url}/ready", timeout=5).status_code == 200
    rollout.set_tag(None)
