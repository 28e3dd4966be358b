"""No side doors into the predictor: what it deserialises and which version it serves are the project's call.

* skops types are trusted from the predictor's own allowlist (plus MODEL_TRUSTED_TYPES), never from the
  ``skops_trusted_types`` a model carries in its MLmodel file; pickle models are refused by default.
* an alias event only wakes the follower, which reads the alias from MLflow: a forged event naming a version
  changes nothing, for ``production`` and for the ``challenger`` prefetch alike.

One predictor (loading in its subprocess, the default) follows the model through the module; a second one,
loading in process, shows the setting. The model is the small text pipeline the other predictor tests use.
"""

from __future__ import annotations

import fractions
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pandas as pd
import pytest
import redis
from mlflow.models import Model

from mlops_common import mlflow_utils
from mlops_common.events import ModelEvent
from tests.predictor.models import (
    TRUSTED,
    metric_value,
    promote,
    register,
    served_version,
    sms,
    text_pipeline,
    wait_for,
)

HAM = "Are we still meeting for lunch tomorrow?"
EXTRA_TYPE = "fractions.Fraction"  # harmless, but not trusted by skops by default nor by the predictor
POLL = 1.0


class TrustStack:
    def __init__(self, url: str, name: str, mlflow_uri: str, redis_url: str, channel: str, log_dir: Path,
                 good: str) -> None:
        self.url, self.name, self.mlflow_uri, self.redis_url = url, name, mlflow_uri, redis_url
        self.channel, self.log_dir, self.good = channel, log_dir, good
        self.client = mlflow_utils.client(mlflow_uri)

    def promote(self, version: str) -> None:
        promote(self.mlflow_uri, self.redis_url, self.channel, self.name, version)

    def publish(self, alias: str, version: str | None) -> None:
        conn = redis.Redis.from_url(self.redis_url)
        conn.publish(self.channel, ModelEvent(model=self.name, alias=alias, version=version).to_json())
        conn.close()

    def model(self, url: str | None = None) -> dict[str, Any]:
        return httpx.get(f"{url or self.url}/model", timeout=5).json()

    def predicted_version(self, url: str | None = None) -> str:
        answer = httpx.post(f"{url or self.url}/predict", json={"instances": [HAM]}, timeout=10)
        assert answer.status_code == 200, answer.text
        return answer.json()["model_version"]

    def log(self) -> str:
        port = self.url.rsplit(":", 1)[1]
        return (self.log_dir / f"predictor-{self.name}-{port}.log").read_text(errors="replace")

    def serve_good(self) -> None:
        if served_version(self.url) != self.good or self.model()["alias_version"] != self.good:
            self.promote(self.good)
            wait_for(lambda: served_version(self.url) == self.good, timeout=30, what="good version served")


@pytest.fixture(scope="module")
def stack(start_predictor: Callable[..., str], mlflow_uri: str, redis_url: str, base_env: dict[str, str],
          log_dir: Path) -> TrustStack:
    name = f"pred-trust-{int(time.time() * 1000) % 10**8}"
    texts, labels = sms(300)
    good = register(mlflow_uri, name, text_pipeline(texts, labels), pd.DataFrame({"text": texts[:2]}),
                    "text-classification")
    url = start_predictor(name, {"POLL_INTERVAL_SECONDS": str(POLL)})
    s = TrustStack(url, name, mlflow_uri, redis_url, base_env["MODEL_EVENTS_CHANNEL"], log_dir, good)
    s.promote(good)
    wait_for(lambda: served_version(url) == good, timeout=60, what="first version served")
    return s


@pytest.fixture(scope="module")
def untrusted(stack: TrustStack) -> str:
    """A version whose skops file holds a Fraction, logged with skops_trusted_types naming it."""
    texts, labels = sms(300, offset=300)
    pipe = text_pipeline(texts, labels)
    pipe.named_steps["model"].provenance_ = fractions.Fraction(1, 3)
    version = register(stack.mlflow_uri, stack.name, pipe, pd.DataFrame({"text": texts[:2]}),
                       skops_trusted_types=[*TRUSTED, EXTRA_TYPE])
    flavor = Model.load(mlflow_utils.model_uri(stack.name, version)).flavors["sklearn"]
    assert EXTRA_TYPE in flavor["skops_trusted_types"]  # the model vouches for it; the predictor must not care
    return version


def test_a_type_outside_the_allowlist_is_refused_and_the_old_version_keeps_serving(stack: TrustStack,
                                                                                   untrusted: str) -> None:
    stack.serve_good()
    failures = metric_value(stack.url, "predictor_model_reloads_total", model_name=stack.name,
                            outcome="failure") or 0
    stack.promote(untrusted)
    model = wait_for(lambda: untrusted in (m := stack.model())["failed_versions"] and m, timeout=30,
                     what="untrusted version refused")
    assert model["model_version"] == stack.good and model["alias_version"] == untrusted
    assert EXTRA_TYPE in model["failed_versions"][untrusted] and "untrusted" in model["failed_versions"][untrusted]
    assert EXTRA_TYPE in model["last_error"] and untrusted in model["last_error"]
    assert stack.predicted_version() == stack.good
    assert metric_value(stack.url, "predictor_model_reloads_total", model_name=stack.name,
                        outcome="failure") >= failures + 1
    assert EXTRA_TYPE in stack.log()
    time.sleep(3 * POLL)  # polls see the alias on it but do not retry (backoff) nor swap it in
    assert stack.predicted_version() == stack.good and served_version(stack.url) == stack.good
    stack.serve_good()
    wait_for(lambda: stack.model()["last_error"] is None, timeout=10, what="error cleared once in step again")


def test_the_setting_adds_a_type_to_the_allowlist(start_predictor: Callable[..., str], stack: TrustStack,
                                                  untrusted: str) -> None:
    stack.client.set_registered_model_alias(stack.name, mlflow_utils.PRODUCTION, untrusted)
    try:
        url = start_predictor(stack.name, {"POLL_INTERVAL_SECONDS": str(POLL), "LOAD_IN_SUBPROCESS": "false",
                                           "MODEL_TRUSTED_TYPES": f'["{EXTRA_TYPE}"]'})
        wait_for(lambda: served_version(url) == untrusted, timeout=60, what="untrusted version served with the setting")
        model = stack.model(url)
        assert model["failed_versions"] == {} and model["reloads"]["success"] == 1
        assert stack.predicted_version(url) == untrusted
    finally:
        stack.serve_good()


def test_a_pickle_model_is_refused_unless_allowed(stack: TrustStack) -> None:
    stack.serve_good()
    texts, labels = sms(300, offset=600)
    pickled = register(stack.mlflow_uri, stack.name, text_pipeline(texts, labels), pd.DataFrame({"text": texts[:2]}),
                       serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE)
    stack.promote(pickled)
    model = wait_for(lambda: pickled in (m := stack.model())["failed_versions"] and m, timeout=30,
                     what="pickle version refused")
    assert "cloudpickle" in model["failed_versions"][pickled]
    assert "MODEL_ALLOW_PICKLE" in model["failed_versions"][pickled]
    assert model["model_version"] == stack.good and stack.predicted_version() == stack.good
    stack.serve_good()


def test_forged_alias_events_change_nothing_and_a_real_move_is_followed(stack: TrustStack) -> None:
    stack.serve_good()
    texts, labels = sms(300, offset=900)
    other = register(stack.mlflow_uri, stack.name, text_pipeline(texts, labels, c=3.0),
                     pd.DataFrame({"text": texts[:2]}), "text-classification")
    assert stack.model()["events_connected"] is True
    assert mlflow_utils.version_by_alias(stack.client, stack.name, mlflow_utils.CHALLENGER) is None
    failed_before = stack.model()["failed_versions"]  # what the other tests left
    # Loadable and registered, and one that does not exist: neither holds production nor challenger.
    for version in (other, "9999"):
        stack.publish("production", version)
        stack.publish("challenger", version)
    deadline = time.monotonic() + 3 * POLL + 1
    while time.monotonic() < deadline:
        model = stack.model()
        assert model["model_version"] == stack.good and model["alias_version"] == stack.good, model
        assert model["standby_version"] is None, model
        assert model["failed_versions"] == failed_before, model  # nothing was even tried
        assert stack.predicted_version() == stack.good
        time.sleep(0.3)

    # A challenger event may only prefetch what MLflow says holds challenger, whatever version it names.
    stack.client.set_registered_model_alias(stack.name, mlflow_utils.CHALLENGER, other)
    stack.publish("challenger", "9999")
    wait_for(lambda: stack.model()["standby_version"] == other, timeout=30, what="MLflow's challenger prefetched")
    assert served_version(stack.url) == stack.good

    # A real move (alias set in MLflow, then announced) is followed, here from the prefetched standby.
    stack.promote(other)
    wait_for(lambda: served_version(stack.url) == other, timeout=10, what="real alias move followed")
    assert stack.predicted_version() == other
    stack.client.delete_registered_model_alias(stack.name, mlflow_utils.CHALLENGER)
