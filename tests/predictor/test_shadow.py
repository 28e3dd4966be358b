"""Shadow traffic, in process: the rollout split's shadow version scores mirrored requests off the request path.

The predictor runs in process (TestClient) with the real lifespan, follower, fast path, micro-batchers, version
pool, shadow mirror and feedback store on the session's real Redis. Only the source of versions is replaced
(a loader reading saved model folders, a dict of aliases and split in place of MLflow's registered model):
a shadow version that sleeps or raises on every call cannot be registered as a real model (the predictor only
loads the project's trusted skops types), so versions 3 and 4 wrap the real version 1 with a slow or failing
``predict``.
"""

from __future__ import annotations

import asyncio
import pickle
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
import redis
from fastapi.testclient import TestClient
from mlflow.models import infer_signature

from mlops_common.rollout import RolloutSplit, ShadowSplit
from predictor.loader import ModelLoader
from predictor.loading import FetchedVersion, LoadedModel, assemble, load_sklearn_pyfunc
from predictor.main import create_app
from predictor.service import PredictorService
from predictor.settings import PredictorSettings
from tests.predictor.models import TRUSTED, sms, text_pipeline
from tests.predictor.test_app_inprocess import Tokens, eventually

SPAM = "WINNER!! Claim your free prize now, call 09061701461 to collect your cash award"
HAM = "Are we still meeting for lunch tomorrow?"
NAME = "shadow-sms"
SLOW_SECONDS = 0.5


def save(pipe: Any, texts: list[str], folder: Path) -> Path:
    example = pd.DataFrame({"text": texts[:2]})
    mlflow.sklearn.save_model(pipe, str(folder), signature=infer_signature(example, pipe.predict(example)),
                              input_example=example, serialization_format="skops", skops_trusted_types=TRUSTED,
                              pip_requirements=["scikit-learn"])
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Version 1: a spam filter; version 2: the same texts with every label flipped (it always disagrees)."""
    texts, labels = sms(300)
    flipped = ["ham" if label == "spam" else "spam" for label in labels]
    root = tmp_path_factory.mktemp("shadow")
    return {"1": save(text_pipeline(texts, labels), texts, root / "good"),
            "2": save(text_pipeline(texts, flipped), texts, root / "flipped")}


class Slow(LoadedModel):
    def predict(self, rows: list[Any], probabilities: bool = False) -> tuple[list[Any], Any]:
        time.sleep(SLOW_SECONDS)
        return super().predict(rows, probabilities)


class Failing(LoadedModel):
    def predict(self, rows: list[Any], probabilities: bool = False) -> tuple[list[Any], Any]:
        raise RuntimeError("the shadow broke")


class Loader(ModelLoader):
    """Versions 1 and 2 from their folders; 3 (slow) and 4 (failing) wrap version 1 once it is warmed up."""

    def __init__(self, settings: PredictorSettings, folders: dict[str, Path]) -> None:
        super().__init__(settings)
        self.folders = folders

    def start(self) -> None:
        pass

    async def load(self, name: str, version: str) -> LoadedModel:
        def fetch() -> LoadedModel:
            folder = self.folders["2" if version == "2" else "1"]
            pyfunc = load_sklearn_pyfunc(folder, f"{name} version {version}", self.trust)
            model = assemble(FetchedVersion(name=name, version=version, run_id=None,
                                            pyfunc_pickle=pickle.dumps(pyfunc), example=[SPAM], reference=None,
                                            spec=None, fetch_seconds=0.0))
            wrapper = {"3": Slow, "4": Failing}.get(version)
            if wrapper is not None:
                model.__class__ = wrapper
            return model

        return await asyncio.to_thread(fetch)


@dataclass
class Registry:
    """Stands in for MLflow's registered model: its aliases and its ``mlops.rollout`` split."""

    split: RolloutSplit = field(default_factory=RolloutSplit)

    def version(self, name: str, alias: str) -> str | None:
        return "1" if alias == "production" else None

    def state(self, name: str) -> tuple[dict[str, str], RolloutSplit]:
        return {"production": "1"}, self.split


@dataclass
class Shadowed:
    client: TestClient
    registry: Registry

    def shadow(self, version: str | None) -> None:
        self.registry.split = RolloutSplit(shadow=ShadowSplit(version=version, share=100) if version else None)
        eventually(lambda: (self.client.get("/model").json()["rollout"]["shadow"] or {}).get("version") == version,
                   timeout=10)
        if version is not None:  # held once loaded: the mirror starts then
            eventually(lambda: version in self.client.get("/models").json()["models"][0]["loaded_versions"],
                       timeout=30)

    def metric(self, name: str, **labels: str) -> float:
        for line in self.client.get("/metrics").text.splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rpartition(" ")[2])
        return 0.0


@pytest.fixture(scope="module")
def shadowed(folders: dict[str, Path], redis_url: str) -> Iterator[Shadowed]:
    registry = Registry()
    prefix = f"test-shadow-{time.time_ns()}"
    cfg = PredictorSettings(model_name=NAME, environment="test", auth_open_reads=True, log_format="text",
                            redis_url=redis_url, redis_key_prefix=prefix,
                            mlflow_tracking_uri="http://127.0.0.1:1", registry_url="http://127.0.0.1:1",
                            model_events_channel=f"test-shadow-{time.time_ns()}", poll_interval_seconds=0.1,
                            load_in_subprocess=False, shadow_queue_size=2, max_batch_wait_ms=0)

    def service(settings: PredictorSettings) -> PredictorService:
        return PredictorService(settings, loader=Loader(settings, folders), aliases=registry)

    with TestClient(create_app(cfg, service_factory=service), raise_server_exceptions=False) as client:
        eventually(lambda: client.get("/ready").status_code == 200)
        client.app.state.authenticator = Tokens()  # type: ignore[attr-defined]
        yield Shadowed(client, registry)
    conn = redis.Redis.from_url(redis_url)
    for key in conn.scan_iter(f"{prefix}:*"):
        conn.delete(key)
    conn.close()


def predict(client: TestClient, text: str) -> tuple[dict[str, Any], float]:
    started = time.perf_counter()
    answer = client.post("/predict", json={"instances": [text]})
    seconds = time.perf_counter() - started
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-model-version"] == "1"
    return answer.json(), seconds


def test_shadow_predictions_are_compared_and_scored_by_feedback(shadowed: Shadowed) -> None:
    shadowed.shadow("2")
    answers = [predict(shadowed.client, text)[0] for text in [SPAM, HAM] * 5]
    assert [a["predictions"] for a in answers] == [["spam"], ["ham"]] * 5  # production's answers
    assert {a["model_version"] for a in answers} == {"1"}
    eventually(lambda: shadowed.metric("predictor_shadow_requests_total", model_version="2", outcome="ok") == 10)
    for label in ("spam", "ham"):
        assert shadowed.metric("predictor_shadow_compared_total", model_version="2", label=label) == 5
        assert shadowed.metric("predictor_shadow_agreed_total", model_version="2", label=label) == 0
    assert shadowed.metric("predictor_shadow_request_duration_seconds_count", model_version="2") == 10
    # Feedback scores both versions over the same requests: production right, the flipped shadow wrong.
    token = {"Authorization": "Bearer sam-token"}
    for answer in answers[:4]:
        truth = answer["predictions"][0]
        given = shadowed.client.post("/feedback", json={"request_id": answer["request_id"], "label": truth},
                                     headers=token)
        assert given.status_code == 200, given.text
    assert shadowed.metric("predictor_version_live_accuracy", model_name=NAME, model_version="1") == 1.0
    assert shadowed.metric("predictor_version_live_accuracy", model_name=NAME, model_version="2") == 0.0
    assert shadowed.metric("predictor_live_accuracy", model_name=NAME) == 1.0
    assert shadowed.metric("predictor_rollout_share", model_version="2", role="shadow") == 100


def test_a_slow_shadow_is_shed_and_never_slows_the_client(shadowed: Shadowed) -> None:
    shadowed.shadow("3")
    times = [predict(shadowed.client, SPAM)[1] for _ in range(30)]
    # The shadow takes 0.5 s per request: none of that reaches the client.
    assert max(times) < SLOW_SECONDS / 2, times
    shed = shadowed.metric("predictor_shadow_requests_total", model_version="3", outcome="shed")
    assert shed >= 20  # one scoring, two queued, the rest shed
    eventually(lambda: shadowed.metric("predictor_shadow_requests_total", model_version="3", outcome="ok")
               + shed == 30, timeout=10)


def test_a_failing_shadow_is_counted_never_raised(shadowed: Shadowed) -> None:
    shadowed.shadow("4")
    for text in [SPAM, HAM] * 3:
        assert predict(shadowed.client, text)[0]["predictions"] == [("spam" if text == SPAM else "ham")]
        time.sleep(0.02)  # the shadow fails at once: the queue never fills
    eventually(lambda: shadowed.metric("predictor_shadow_requests_total", model_version="4", outcome="error") == 6)


def test_no_shadow_no_mirror(shadowed: Shadowed) -> None:
    shadowed.shadow(None)
    before = shadowed.metric("predictor_shadow_requests_total", model_version="2", outcome="ok")
    for _ in range(5):
        predict(shadowed.client, HAM)
    time.sleep(0.3)
    assert shadowed.metric("predictor_shadow_requests_total", model_version="2", outcome="ok") == before
    assert 'predictor_rollout_share{model_name="shadow-sms"' not in shadowed.client.get("/metrics").text
