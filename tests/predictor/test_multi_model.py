"""One predictor for several models (MODEL_NAME plus MODELS): a text and a tabular model registered in MLflow,
each at /models/{name}/predict with its own production version, /predict still MODEL_NAME's; other versions
loaded on demand (503 with Retry-After, then 200), the least recently used one unloaded beyond
MAX_LOADED_VERSIONS; unknown models and versions are 404s naming them; an alias move of one model leaves the
other alone."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import pytest

from mlops_common.errors import NotFound
from predictor.catalog import ModelCatalog
from predictor.service import PredictorService
from predictor.settings import PredictorSettings
from tests.predictor.models import (
    fare,
    metric_value,
    promote,
    register,
    sms,
    taxi_frame,
    taxi_pipeline,
    text_pipeline,
    wait_for,
)
from tests.predictor.test_app_inprocess import NAME, Aliases, FolderLoader, settings
from tests.predictor.test_app_inprocess import model_folder as _model_folder
from tests.support.registry import copies_of

model_folder = _model_folder  # the tiny text model of test_app_inprocess, saved once for this module too

SPAM = "WINNER!! Claim your free prize now, call 09061701461 to collect your cash award"


@dataclass
class Served:
    url: str
    text: str
    tabular: str
    text_versions: list[str]
    tabular_version: str

    def predict(self, path: str, instances: list, timeout: float = 10) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", json={"instances": instances}, timeout=timeout)

    def loaded(self, name: str) -> list[str]:
        models = httpx.get(f"{self.url}/models", timeout=5).json()["models"]
        return next(m["loaded_versions"] for m in models if m["model_name"] == name)


def production(url: str, name: str) -> str | None:
    try:
        return httpx.get(f"{url}/models/{name}", timeout=5).json().get("model_version")
    except (httpx.HTTPError, ValueError):
        return None


@pytest.fixture(scope="module")
def served(start_predictor: Callable[..., str], mlflow_uri: str, redis_url: str,
           base_env: dict[str, str]) -> Served:
    suffix = int(time.time() * 1000) % 10**8
    text, tabular = f"multi-sms-{suffix}", f"multi-taxi-{suffix}"
    texts, labels = sms(300)
    first = register(mlflow_uri, text, text_pipeline(texts, labels), pd.DataFrame({"text": texts[:2]}),
                     "text-classification")
    text_versions = [first, *copies_of(mlflow_uri, text, first, 3)]
    train = taxi_frame(500)
    tabular_version = register(mlflow_uri, tabular, taxi_pipeline(train), train.head(3), "tabular-regression")
    channel = base_env["MODEL_EVENTS_CHANNEL"]
    promote(mlflow_uri, redis_url, channel, text, first)
    promote(mlflow_uri, redis_url, channel, tabular, tabular_version)
    # Two production versions plus two more held on demand.
    url = start_predictor(text, {"MODELS": f"{text},{tabular}", "MAX_LOADED_VERSIONS": "4",
                                 "LOAD_IN_SUBPROCESS": "false"})
    wait_for(lambda: production(url, text) == first and production(url, tabular) == tabular_version,
             timeout=90, what="both models served")
    return Served(url, text, tabular, text_versions, tabular_version)


def wait_loaded(served: Served, name: str, version: str) -> httpx.Response:
    """Asks for ``version`` until it answers; the first answer must be the 503 of a load under way."""
    path = f"/models/{name}/versions/{version}/predict"
    first = served.predict(path, [SPAM])
    assert first.status_code == 503, first.text
    assert first.headers["retry-after"].isdigit() and "loading" in first.json()["detail"]
    answers: list[httpx.Response] = []
    wait_for(lambda: answers.append(served.predict(path, [SPAM])) or answers[-1].status_code == 200,
             timeout=60, what=f"version {version} loaded")
    assert {a.status_code for a in answers} <= {200, 503}
    return answers[-1]


def test_each_model_answers_at_its_route_with_its_own_version(served: Served) -> None:
    default = served.predict("/predict", [SPAM])
    assert default.status_code == 200, default.text
    assert default.json()["model_name"] == served.text and default.json()["model_version"] == served.text_versions[0]
    text = served.predict(f"/models/{served.text}/predict", [SPAM])
    assert text.status_code == 200 and text.json()["predictions"] == default.json()["predictions"] == ["spam"]
    rows = taxi_frame(2, seed=5)
    tabular = served.predict(f"/models/{served.tabular}/predict", rows.to_dict(orient="records"))
    assert tabular.status_code == 200, tabular.text
    body = tabular.json()
    assert body["model_name"] == served.tabular and body["model_version"] == served.tabular_version
    assert body["predictions"] == pytest.approx(fare(rows).tolist(), abs=1e-6)
    # Each model validates against its own signature.
    wrong = served.predict(f"/models/{served.tabular}/predict", [SPAM])
    assert wrong.status_code == 422 and "expected an object" in wrong.text
    assert (metric_value(served.url, "predictor_model_requests_total", model_name=served.tabular,
                         status="200") or 0) >= 1
    v2 = httpx.get(f"{served.url}/v2/models/{served.tabular}", timeout=5)
    assert v2.status_code == 200 and v2.json()["versions"] == [served.tabular_version], v2.text


def test_unknown_models_and_versions_are_404s_naming_them(served: Served) -> None:
    unknown = served.predict("/models/no-such-model/predict", [SPAM])
    assert unknown.status_code == 404 and "'no-such-model'" in unknown.json()["detail"]
    for version in ("999", "abc"):
        missing = served.predict(f"/models/{served.text}/versions/{version}/predict", [SPAM])
        assert missing.status_code == 404 and f"version '{version}'" in missing.json()["detail"], missing.text
    assert served.predict("/models/no-such-model/versions/1/predict", [SPAM]).status_code == 404
    assert httpx.get(f"{served.url}/v2/models/no-such-model", timeout=5).status_code == 404
    assert httpx.get(f"{served.url}/models/no-such-model", timeout=5).status_code == 404


def test_a_version_loads_on_first_request_and_the_least_recently_used_is_unloaded(served: Served) -> None:
    name, versions = served.text, served.text_versions
    production_answer = served.predict(f"/models/{name}/versions/{versions[0]}/predict", [SPAM])
    assert production_answer.status_code == 200 and production_answer.json()["model_version"] == versions[0]
    second = wait_loaded(served, name, versions[1])
    assert second.json()["model_version"] == versions[1] and second.json()["predictions"] == ["spam"]
    wait_loaded(served, name, versions[2])
    assert served.loaded(name) == [versions[1], versions[2]]
    # versions[1] used last: versions[2] is the least recently used when versions[3] comes in.
    assert served.predict(f"/models/{name}/versions/{versions[1]}/predict", [SPAM]).status_code == 200
    wait_loaded(served, name, versions[3])
    assert served.loaded(name) == [versions[1], versions[3]]
    assert metric_value(served.url, "predictor_version_evictions_total", model_name=name) == 1
    again = served.predict(f"/models/{name}/versions/{versions[2]}/predict", [SPAM])
    assert again.status_code == 503 and again.headers.get("retry-after")
    # The production versions stay served throughout.
    assert served.predict("/predict", [SPAM]).json()["model_version"] == versions[0]


def test_an_alias_move_of_one_model_leaves_the_other_alone(served: Served, mlflow_uri: str, redis_url: str,
                                                           base_env: dict[str, str]) -> None:
    before = httpx.get(f"{served.url}/models/{served.tabular}", timeout=5).json()
    promote(mlflow_uri, redis_url, base_env["MODEL_EVENTS_CHANNEL"], served.text, served.text_versions[1])
    wait_for(lambda: production(served.url, served.text) == served.text_versions[1], timeout=30,
             what="the text model's new production version")
    assert served.predict("/predict", [SPAM]).json()["model_version"] == served.text_versions[1]
    rows = taxi_frame(1, seed=6).to_dict(orient="records")
    tabular = served.predict(f"/models/{served.tabular}/predict", rows)
    assert tabular.status_code == 200 and tabular.json()["model_version"] == served.tabular_version
    after = httpx.get(f"{served.url}/models/{served.tabular}", timeout=5).json()
    assert after["reloads"] == before["reloads"] and after["loaded_at"] == before["loaded_at"]


class Listing:
    def __init__(self, *names: str) -> None:
        self.names = list(names)

    def with_production(self) -> list[str]:
        return self.names


def test_every_model_with_a_production_alias_is_served_with_a_star(model_folder: Path) -> None:
    """MODELS=*: the models the registry lists with a `production` alias are added, once each."""
    star = settings().model_copy(update={"models": f"*, {NAME}"})
    assert star.discover_models and star.model_names == [NAME]
    cfg = settings()  # the periodic lookup itself is not started: it would ask MLflow

    def service(c: PredictorSettings) -> PredictorService:
        return PredictorService(c, loader=FolderLoader(c, model_folder), aliases=Aliases(production="1"))

    async def run() -> None:
        catalog = ModelCatalog(cfg, service)
        assert list(catalog.services) == [NAME]
        await catalog.start()
        try:
            assert await catalog.discover(Listing(NAME, "other")) == ["other"]
            assert await catalog.discover(Listing(NAME, "other")) == []
            assert list(catalog.services) == [NAME, "other"] and catalog.default.name == NAME
            with pytest.raises(NotFound, match="this predictor serves 'tiny-sms', 'other'"):
                catalog.get("third")
        finally:
            await catalog.stop()

    asyncio.run(run())
