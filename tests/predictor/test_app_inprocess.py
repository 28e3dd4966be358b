"""The predictor app in process (TestClient, no server, no MLflow): a tiny real sklearn model saved to a folder
is loaded by the predictor's own loading code and served once the alias source says it holds `production`.

Only the source of versions is replaced (a loader reading the folder, a dict of aliases): the lifespan, the
follower's reconcile loop, the fast path, the micro-batcher and the routes are the real ones. Redis is an
address nothing listens on, so nothing here needs a running service.
"""

from __future__ import annotations

import asyncio
import pickle
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from mlflow.models import infer_signature

from mlops_common.auth import Principal
from predictor import __version__
from predictor.loader import ModelLoader
from predictor.loading import FetchedVersion, LoadedModel, assemble, load_sklearn_pyfunc
from predictor.main import create_app
from predictor.service import PredictorService
from predictor.settings import PredictorSettings
from tests.predictor.models import TRUSTED, sms, text_pipeline

SPAM = "WINNER!! Claim your free prize now, call 09061701461 to collect your cash award"
HAM = "Are we still meeting for lunch tomorrow?"
NAME = "tiny-sms"


class FolderLoader(ModelLoader):
    """Loads every version from one saved MLflow model folder, in process."""

    def __init__(self, settings: PredictorSettings, folder: Path) -> None:
        super().__init__(settings)
        self.folder = folder

    def start(self) -> None:
        pass

    async def load(self, name: str, version: str) -> LoadedModel:
        def fetch() -> LoadedModel:
            pyfunc = load_sklearn_pyfunc(self.folder, f"{name} version {version}", self.trust)
            return assemble(FetchedVersion(name=name, version=version, run_id=None, pyfunc_pickle=pickle.dumps(pyfunc),
                                           example=[SPAM], reference=None, spec=None, fetch_seconds=0.0))

        return await asyncio.to_thread(fetch)


class Tokens:
    """Stands in for registry-proxy's answer about a token: one scientist."""

    async def principal(self, token: str) -> Principal | None:
        return Principal(name="sam", role="scientist") if token == "sam-token" else None


class Aliases:
    def __init__(self, **aliases: str) -> None:
        self.aliases = aliases

    def version(self, name: str, alias: str) -> str | None:
        return self.aliases.get(alias) if name == NAME else None


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts, labels = sms(300)
    pipe = text_pipeline(texts, labels)
    example = pd.DataFrame({"text": texts[:2]})
    folder = tmp_path_factory.mktemp("tiny") / "model"
    mlflow.sklearn.save_model(pipe, str(folder), signature=infer_signature(example, pipe.predict(example)),
                              input_example=example, serialization_format="skops", skops_trusted_types=TRUSTED,
                              pip_requirements=["scikit-learn"])
    return folder


def settings() -> PredictorSettings:
    return PredictorSettings(model_name=NAME, environment="test", auth_open_reads=True, log_format="text",
                             redis_url="redis://127.0.0.1:1/0", mlflow_tracking_uri="http://127.0.0.1:1",
                             registry_url="http://127.0.0.1:1", poll_interval_seconds=0.2,
                             load_in_subprocess=False, max_instances=5)


def client_for(folder: Path, aliases: Aliases) -> Iterator[TestClient]:
    def service(cfg: PredictorSettings) -> PredictorService:
        return PredictorService(cfg, loader=FolderLoader(cfg, folder), aliases=aliases)

    with TestClient(create_app(settings(), service_factory=service), raise_server_exceptions=False) as client:
        yield client


def eventually(check: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.05)
    raise AssertionError("not within the timeout")


@pytest.fixture(scope="module")
def idle(model_folder: Path) -> Iterator[TestClient]:
    """A predictor whose model has no `production` version."""
    yield from client_for(model_folder, Aliases())


@pytest.fixture(scope="module")
def serving(model_folder: Path) -> Iterator[TestClient]:
    """A predictor whose model has version 1 in `production`."""
    clients = client_for(model_folder, Aliases(production="1"))
    client = next(clients)
    eventually(lambda: client.get("/ready").status_code == 200)
    yield client
    next(clients, None)


def test_health_names_the_service_and_its_version(idle: TestClient) -> None:
    assert idle.get("/health").json() == {"status": "ok", "service": "predictor", "version": __version__}


def test_nothing_served_yet(idle: TestClient) -> None:
    ready = idle.get("/ready")
    assert ready.status_code == 503
    assert "no production version of model 'tiny-sms' is being served yet" in ready.json()["detail"]
    assert ready.json()["status"] == "unavailable" and ready.json()["model_name"] == NAME
    refused = idle.post("/predict", json={"instances": [HAM]})
    assert refused.status_code == 503 and "'production' alias" in refused.json()["detail"]
    model = idle.get("/model").json()
    assert model["serving"] is False and model["model_version"] is None and model["alias_version"] is None


def test_an_unknown_route_is_a_404_with_a_detail(idle: TestClient) -> None:
    missing = idle.get("/no/such/route")
    assert missing.status_code == 404 and missing.json()["detail"]


def test_ready_names_the_served_version(serving: TestClient) -> None:
    body = serving.get("/ready").json()
    assert body["status"] == "ready" and body["service"] == "predictor"
    assert (body["model_name"], body["model_version"]) == (NAME, "1")


def test_predict_answers_with_the_served_version(serving: TestClient) -> None:
    answer = serving.post("/predict", json={"instances": [SPAM, {"text": HAM}], "probabilities": True})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["predictions"] == ["spam", "ham"]
    assert (body["model_name"], body["model_version"]) == (NAME, "1") and len(body["request_id"]) == 32
    assert set(body["probabilities"][0]) == {"ham", "spam"} and body["probabilities"][0]["spam"] > 0.5


@pytest.mark.parametrize(("content", "status", "field", "reason"), [
    (b'{"instances": ["ok", 3]}', 422, "instances[1]", "expected a string"),
    (b'{"instances": ["a", "b", "c", "d", "e", "f"]}', 422, "instances", "at most 5"),
    (b'["not", "an", "object"]', 422, "body", "JSON object"),
    (b'{"instances": [', 400, None, "malformed JSON"),
])
def test_predict_refusals_name_the_problem(serving: TestClient, content: bytes, status: int, field: str | None,
                                           reason: str) -> None:
    answer = serving.post("/predict", content=content, headers={"content-type": "application/json"})
    assert answer.status_code == status, answer.text
    assert reason in answer.json()["detail"] and answer.json().get("field") == field


def test_invocations_answer_and_refuse_in_mlflows_shape(serving: TestClient) -> None:
    answer = serving.post("/invocations", json={"dataframe_split": {"columns": ["text"], "data": [[SPAM], [HAM]]}})
    assert answer.status_code == 200 and answer.json() == {"predictions": ["spam", "ham"]}
    refused = serving.post("/invocations", json={"unknown_key": [1]})
    assert refused.status_code == 400
    assert refused.json()["error_code"] == "BAD_REQUEST" and refused.json()["message"]
    wrong_type = serving.post("/invocations", content=b"x", headers={"content-type": "application/xml"})
    assert wrong_type.status_code == 415 and "not supported" in wrong_type.json()["message"]


def test_model_describes_the_served_version(serving: TestClient) -> None:
    model = serving.get("/model").json()
    assert model["serving"] is True and model["model_version"] == "1" and model["alias_version"] == "1"
    assert model["task"] == "text-classification" and model["classes"] == ["ham", "spam"]
    assert model["inputs"] == [{"name": "text", "type": "string", "required": True}]
    assert model["last_swap"]["to_version"] == "1" and model["last_swap"]["reason"] == "poll"


def test_feedback(serving: TestClient) -> None:
    """Auth first, then the body (a 422 naming the fields at fault, without echoing the input, which may not
    even be JSON-encodable back), then the store: Redis is unreachable here, so a valid feedback is a 503."""
    request_id = serving.post("/predict", json={"instances": [SPAM]}).json()["request_id"]
    anonymous = serving.post("/feedback", json={"request_id": request_id, "label": "spam"})
    assert anonymous.status_code == 401 and anonymous.json()["detail"]
    serving.app.state.authenticator = Tokens()  # type: ignore[attr-defined]
    token = {"Authorization": "Bearer sam-token"}
    invalid = serving.post("/feedback", content=b'{"instances": [42633352674453659648]}',
                           headers={**token, "content-type": "application/json"})
    assert invalid.status_code == 422
    assert invalid.json() == {"detail": "request_id: Field required; instances: Extra inputs are not permitted"}
    both = serving.post("/feedback", json={"request_id": request_id}, headers=token)
    assert both.status_code == 422 and "exactly one of 'label'" in both.json()["detail"]
    down = serving.post("/feedback", json={"request_id": request_id, "label": "spam"}, headers=token)
    assert down.status_code == 503 and "feedback store (Redis) is unavailable" in down.json()["detail"]


def test_the_openapi_documents_every_body(idle: TestClient) -> None:
    doc = idle.get("/openapi.json").json()
    predict = doc["paths"]["/predict"]["post"]
    schema = predict["requestBody"]["content"]["application/json"]["schema"]
    assert {"instances", "probabilities"} <= set(schema["properties"]) and schema["required"] == ["instances"]
    assert predict["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/PredictResponse")
    invocations = doc["paths"]["/invocations"]["post"]["requestBody"]["content"]
    assert "dataframe_split" in invocations["application/json"]["schema"]["properties"] and "text/csv" in invocations
    for path, method, model in (("/model", "get", "ModelInfo"), ("/feedback", "post", "FeedbackResponse"),
                                ("/health", "get", "Health"), ("/ready", "get", "Readiness")):
        answer = doc["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"]
        assert answer["$ref"].endswith(f"/{model}"), (path, answer)
    assert set(doc["components"]["schemas"]["FeedbackRequest"]["properties"]) == {"request_id", "label", "value",
                                                                                   "index"}
