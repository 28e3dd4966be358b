"""Open Inference Protocol v2 on the predictor.

In process (TestClient, the tiny text model of test_app_inprocess): metadata, readiness and inference, and
every refusal in the protocol's shape ``{"error": "..."}``. Then against real predictors serving from MLflow,
with a client nobody here wrote, NVIDIA's ``tritonclient[http]``: health, metadata and inference on a text
and a tabular model, with its default binary tensors and with JSON ones.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from tests.predictor.models import (
    fare,
    promote,
    register,
    served_version,
    sms,
    taxi_frame,
    taxi_pipeline,
    text_pipeline,
    wait_for,
)
from tests.predictor.test_app_inprocess import (
    HAM,
    NAME,
    SPAM,
    Aliases,
    Tokens,
    client_for,
    eventually,
)
from tests.predictor.test_app_inprocess import model_folder as _model_folder

model_folder = _model_folder  # the tiny text model of test_app_inprocess, saved once for this module too
INFER = f"/v2/models/{NAME}/infer"


def text_input(*texts: Any, name: str = "text", datatype: str = "BYTES", shape: list[int] | None = None) -> dict:
    return {"name": name, "datatype": datatype, "shape": shape if shape is not None else [len(texts)],
            "data": list(texts)}


@pytest.fixture(scope="module")
def idle(model_folder: Path) -> Iterator[TestClient]:
    yield from client_for(model_folder, Aliases())


@pytest.fixture(scope="module")
def serving(model_folder: Path) -> Iterator[TestClient]:
    clients = client_for(model_folder, Aliases(production="1"))
    client = next(clients)
    eventually(lambda: client.get("/v2/health/ready").status_code == 200)
    yield client
    next(clients, None)


def test_server_metadata_and_health_before_anything_is_served(idle: TestClient) -> None:
    server = idle.get("/v2")
    assert server.status_code == 200 and server.json()["name"] == "predictor"
    assert set(server.json()) == {"name", "version", "extensions"}
    assert idle.get("/v2/health/live").json() == {"live": True}
    for path in ("/v2/health/ready", f"/v2/models/{NAME}", f"/v2/models/{NAME}/ready",
                 f"/v2/models/{NAME}/versions/1/ready"):
        answer = idle.get(path)
        assert answer.status_code == 503, path
        assert list(answer.json()) == ["error"] and "production" in answer.json()["error"]
    refused = idle.post(INFER, json={"inputs": [text_input(HAM)]})
    assert refused.status_code == 503 and list(refused.json()) == ["error"]
    unknown = idle.get("/v2/models/other-model")
    assert unknown.status_code == 404 and "'other-model'" in unknown.json()["error"]


def test_model_metadata_comes_from_the_signature(serving: TestClient) -> None:
    meta = serving.get(f"/v2/models/{NAME}")
    assert meta.status_code == 200, meta.text
    body = meta.json()
    assert (body["name"], body["versions"], body["platform"]) == (NAME, ["1"], "mlflow_sklearn")
    assert body["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1], "parameters": None}]
    assert body["outputs"] == [
        {"name": "predictions", "datatype": "BYTES", "shape": [-1], "parameters": None},
        {"name": "probabilities", "datatype": "FP64", "shape": [-1, 2], "parameters": {"classes": ["ham", "spam"]}}]
    assert serving.get(f"/v2/models/{NAME}/versions/1").json() == body
    assert serving.get(f"/v2/models/{NAME}/ready").json() == {"name": NAME, "version": "1", "ready": True}
    assert serving.get(f"/v2/models/{NAME}/versions/1/ready").status_code == 200
    assert serving.get("/v2/health/ready").json() == {"ready": True}
    for path in (f"/v2/models/{NAME}/versions/2", f"/v2/models/{NAME}/versions/2/ready"):
        answer = serving.get(path)
        assert answer.status_code == 404 and "serves version 1" in answer.json()["error"]


def test_infer_answers_like_predict(serving: TestClient) -> None:
    answer = serving.post(INFER, json={"id": "req-7", "inputs": [text_input(SPAM, HAM)]})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["model_name"], body["model_version"], body["id"]) == (NAME, "1", "req-7")
    assert len(body["parameters"]["request_id"]) == 32
    assert body["outputs"] == [{"name": "predictions", "datatype": "BYTES", "shape": [2], "data": ["spam", "ham"]}]
    predict = serving.post("/predict", json={"instances": [SPAM, HAM], "probabilities": True}).json()
    assert predict["predictions"] == ["spam", "ham"]
    nested = serving.post(f"/v2/models/{NAME}/versions/1/infer",
                          json={"inputs": [text_input([SPAM], [HAM])], "parameters": {"probabilities": True}})
    assert nested.status_code == 200, nested.text
    assert "id" not in nested.json()
    predictions, probabilities = nested.json()["outputs"]
    assert predictions["data"] == ["spam", "ham"]
    assert (probabilities["name"], probabilities["datatype"], probabilities["shape"]) == ("probabilities", "FP64",
                                                                                          [2, 2])
    assert probabilities["parameters"] == {"classes": ["ham", "spam"]}
    expected = [p[c] for p in predict["probabilities"] for c in ("ham", "spam")]
    assert probabilities["data"] == pytest.approx(expected)
    only = serving.post(INFER, json={"inputs": [text_input(SPAM)], "outputs": [{"name": "probabilities"}]})
    assert [o["name"] for o in only.json()["outputs"]] == ["probabilities"]


def test_binary_tensor_data(serving: TestClient) -> None:
    """Triton's binary tensor extension, as tritonclient sends inputs by default."""
    texts = [SPAM.encode(), "Lunch? ☕".encode()]
    data = b"".join(struct.pack("<I", len(t)) + t for t in texts)
    header = (b'{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], '
              b'"parameters": {"binary_data_size": %d}}]}' % len(data))
    answer = serving.post(INFER, content=header + data,
                          headers={"Inference-Header-Content-Length": str(len(header)),
                                   "content-type": "application/octet-stream"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["data"][0] == "spam"
    short = serving.post(INFER, content=header + data[:-3],
                         headers={"Inference-Header-Content-Length": str(len(header))})
    assert short.status_code == 400 and "binary_data_size" in short.json()["error"]


@pytest.mark.parametrize(("body", "reason"), [
    ({"inputs": [text_input(HAM, name="message")]}, "unknown input 'message'"),
    ({"inputs": [text_input(1.5, datatype="FP64")]}, "datatype FP64 does not match the model's BYTES"),
    ({"inputs": [text_input(HAM, datatype="STRING")]}, "unknown datatype 'STRING'"),
    ({"inputs": [text_input(HAM, shape=[1, 1])]}, "shape [1, 1] does not match the model's [-1]"),
    ({"inputs": [text_input(HAM, HAM, shape=[3])]}, "2 elements for shape [3]"),
    ({"inputs": [text_input(HAM, shape=[-1])]}, "shape [-1] has a negative dimension"),
    ({"inputs": [text_input(HAM, 3)]}, "element 1 is an integer, not BYTES"),
    ({"inputs": [text_input(HAM), text_input(SPAM)]}, "sent twice"),
    ({"inputs": []}, "missing inputs ['text']"),
    ({"inputs": [text_input()]}, "no instances"),
    ({"inputs": [text_input(*[HAM] * 6)]}, "at most 5 instances"),
    ({"inputs": [text_input(HAM)], "outputs": [{"name": "label"}]}, "unknown output 'label'"),
    ({"inputs": [text_input(HAM)], "parameters": {"probabilities": "yes"}}, "expected a boolean"),
    ({"inputs": [{"name": "text", "datatype": "BYTES", "shape": ["1"], "data": [HAM]}]}, "inputs.0.shape.0"),
    ({"instances": [HAM]}, "not an inference request"),
    ([1, 2], "not an inference request"),
])
def test_refusals_in_the_protocols_shape(serving: TestClient, body: Any, reason: str) -> None:
    answer = serving.post(INFER, json=body)
    assert answer.status_code == 400, answer.text
    assert list(answer.json()) == ["error"] and reason in answer.json()["error"], answer.json()


def test_other_refusals_in_the_protocols_shape(serving: TestClient) -> None:
    malformed = serving.post(INFER, content=b'{"inputs": [', headers={"content-type": "application/json"})
    assert malformed.status_code == 400 and "malformed JSON" in malformed.json()["error"]
    other = serving.post("/v2/models/other/infer", json={"inputs": [text_input(HAM)]})
    assert other.status_code == 404 and "this predictor serves 'tiny-sms'" in other.json()["error"]
    version = serving.post(f"/v2/models/{NAME}/versions/9/infer", json={"inputs": [text_input(HAM)]})
    assert version.status_code == 404 and "no version '9'" in version.json()["error"]
    too_large = serving.post(INFER, content=b"x" * 1_000_001, headers={"content-type": "application/json"})
    assert too_large.status_code == 413 and list(too_large.json()) == ["error"]
    serving.app.state.authenticator = Tokens()  # type: ignore[attr-defined]
    for path in (f"/v2/models/{NAME}", INFER):
        refused = serving.request("POST" if path == INFER else "GET", path, json={"inputs": [text_input(HAM)]},
                                  headers={"Authorization": "Bearer not-a-token"})
        assert refused.status_code == 401 and list(refused.json()) == ["error"], refused.text
    allowed = serving.post(INFER, json={"inputs": [text_input(HAM)]}, headers={"Authorization": "Bearer sam-token"})
    assert allowed.status_code == 200


def test_the_openapi_documents_the_protocol(idle: TestClient) -> None:
    doc = idle.get("/openapi.json").json()
    infer = doc["paths"]["/v2/models/{name}/infer"]["post"]
    assert infer["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/InferResponse")
    assert "inputs" in infer["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert infer["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/ProtocolError")
    for path, model in (("/v2", "ServerMetadata"), ("/v2/models/{name}", "ModelMetadata"),
                        ("/v2/models/{name}/versions/{version}/ready", "ModelReady")):
        schema = doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert schema["$ref"].endswith(f"/{model}"), path


# --- A real predictor, and tritonclient -------------------------------------------------------------------------

TEXT_SPEC = {"name": "x", "task": "text-classification",
             "data": {"uri": "sms.csv", "text_column": "text", "label_column": "label"},
             "metric": {"name": "f1_macro", "higher_is_better": True, "threshold": 0.5}}
TAXI_SPEC = {"name": "x", "task": "tabular-regression",
             "data": {"uri": "taxi.csv", "feature_columns": ["distance_km", "passengers", "vendor"],
                      "target_column": "fare"},
             "metric": {"name": "mae", "higher_is_better": False, "threshold": 2.0}}


def serve(start_predictor: Callable[..., str], mlflow_uri: str, redis_url: str, base_env: dict[str, str],
          name: str, version: str) -> str:
    promote(mlflow_uri, redis_url, base_env["MODEL_EVENTS_CHANNEL"], name, version)
    url = start_predictor(name)
    wait_for(lambda: served_version(url) == version, timeout=60, what=f"{name} version {version} served")
    return url


def triton(url: str) -> Any:
    import tritonclient.http as httpclient

    return httpclient.InferenceServerClient(url=url.removeprefix("http://"), network_timeout=30)


@pytest.fixture(scope="module")
def text_server(start_predictor: Callable[..., str], mlflow_uri: str, redis_url: str,
                base_env: dict[str, str]) -> tuple[str, str, str]:
    name = f"oip-text-{int(time.time() * 1000) % 10**8}"
    texts, labels = sms(600)
    model = text_pipeline(texts, labels)
    version = register(mlflow_uri, name, model, pd.DataFrame({"text": texts[:3]}), "text-classification",
                       texts, model.predict(texts), TEXT_SPEC)
    return serve(start_predictor, mlflow_uri, redis_url, base_env, name, version), name, version


@pytest.fixture(scope="module")
def taxi_server(start_predictor: Callable[..., str], mlflow_uri: str, redis_url: str,
                base_env: dict[str, str]) -> tuple[str, str, str]:
    name = f"oip-taxi-{int(time.time() * 1000) % 10**8}"
    train = taxi_frame(500)
    model = taxi_pipeline(train)
    version = register(mlflow_uri, name, model, train.head(3), "tabular-regression", train, model.predict(train),
                       TAXI_SPEC)
    return serve(start_predictor, mlflow_uri, redis_url, base_env, name, version), name, version


def test_tritonclient_text_model(text_server: tuple[str, str, str]) -> None:
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    url, name, version = text_server
    client = triton(url)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(name) and client.is_model_ready(name, version)
    assert not client.is_model_ready(name, "999") and not client.is_model_ready("no-such-model")
    assert client.get_server_metadata()["name"] == "predictor"
    meta = client.get_model_metadata(name, version)
    assert meta["versions"] == [version]
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1], "parameters": None}]
    assert [o["name"] for o in meta["outputs"]] == ["predictions", "probabilities"]

    texts = np.array([SPAM.encode(), HAM.encode()], dtype=np.object_)
    for binary in (True, False):
        tensor = httpclient.InferInput("text", [2], "BYTES")
        tensor.set_data_from_numpy(texts, binary_data=binary)
        result = client.infer(name, [tensor], model_version=version, request_id=f"r-{binary}",
                              outputs=[httpclient.InferRequestedOutput("predictions", binary_data=binary),
                                       httpclient.InferRequestedOutput("probabilities", binary_data=binary)])
        assert [str(v) for v in result.as_numpy("predictions")] == ["spam", "ham"], binary
        probabilities = result.as_numpy("probabilities")
        assert probabilities.shape == (2, 2) and probabilities[0][1] > 0.5 > probabilities[1][1]
        assert result.get_response()["id"] == f"r-{binary}"

    tensor = httpclient.InferInput("message", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([b"hi"], dtype=np.object_))
    with pytest.raises(InferenceServerException) as refused:
        client.infer(name, [tensor])
    assert refused.value.status() == "400" and "unknown input 'message'" in refused.value.message()
    with pytest.raises(InferenceServerException) as unknown:
        client.get_model_metadata("no-such-model")
    assert unknown.value.status() == "404"
    client.close()


def test_tritonclient_tabular_model(taxi_server: tuple[str, str, str]) -> None:
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    url, name, version = taxi_server
    client = triton(url)
    assert client.is_model_ready(name)
    meta = client.get_model_metadata(name)
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [
        ("distance_km", "FP64", [-1]), ("passengers", "INT64", [-1]), ("vendor", "BYTES", [-1])]
    assert [(t["name"], t["datatype"]) for t in meta["outputs"]] == [("predictions", "FP64")]

    rows = taxi_frame(4, seed=3)
    columns = {"distance_km": ("FP64", rows.distance_km.to_numpy(dtype=np.float64)),
               "passengers": ("INT64", rows.passengers.to_numpy(dtype=np.int64)),
               "vendor": ("BYTES", np.array([v.encode() for v in rows.vendor], dtype=np.object_))}
    for binary in (True, False):
        inputs = []
        for column, (datatype, values) in columns.items():
            tensor = httpclient.InferInput(column, [len(rows)], datatype)
            tensor.set_data_from_numpy(values, binary_data=binary)
            inputs.append(tensor)
        result = client.infer(name, inputs)
        assert result.as_numpy("predictions").tolist() == pytest.approx(fare(rows).tolist(), abs=1e-6)

    wrong = httpclient.InferInput("passengers", [len(rows)], "INT32")
    wrong.set_data_from_numpy(rows.passengers.to_numpy(dtype=np.int32))
    with pytest.raises(InferenceServerException) as refused:
        client.infer(name, [inputs[0], wrong, inputs[2]])
    assert refused.value.status() == "400" and "datatype INT32 does not match the model's INT64" in str(refused.value)
    probabilities = httpclient.InferRequestedOutput("probabilities", binary_data=False)
    with pytest.raises(InferenceServerException) as regression:
        client.infer(name, inputs, outputs=[probabilities])
    assert regression.value.status() == "400" and "unknown output 'probabilities'" in str(regression.value)
    client.close()
