"""MLflow's scoring protocol, case by case: each request goes to `mlflow models serve` and to the predictor
serving the same registered version, and both must answer alike (status, MLflow's ``error_code``, the
predictions, and the words of the message a client would match on). The cases are those of MLflow's own
scoring-server tests (content types and their parameters, Parquet, malformed JSON, wrong format keys, an
index that disagrees with the data, input off the signature, empty input), for a text and a tabular model.
MLflow's own client (``ScoringServerClient``) waits for the predictor and scores through it."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import mlflow
import orjson
import pandas as pd
import pytest
from mlflow.pyfunc.scoring_server import CONTENT_TYPE_PARQUET
from mlflow.pyfunc.scoring_server.client import ScoringServerClient

from tests.predictor.models import (
    promote,
    register,
    served_version,
    sms,
    taxi_frame,
    taxi_pipeline,
    text_pipeline,
    wait_for,
)
from tests.support import processes as p

JSON = "application/json"
TEXTS = ["WINNER!! Claim your free prize now, call 09061701461", "Are we still meeting for lunch tomorrow?"]


class Pair:
    """One registered version, served by `mlflow models serve` (``theirs``) and by the predictor (``ours``)."""

    def __init__(self, theirs: str, ours: str) -> None:
        self.theirs, self.ours = theirs, ours

    def post(self, content: bytes, content_type: str) -> tuple[httpx.Response, httpx.Response]:
        headers = {"content-type": content_type}
        theirs, ours = (httpx.post(f"{url}/invocations", content=content, headers=headers, timeout=30)
                        for url in (self.theirs, self.ours))
        return theirs, ours


@pytest.fixture(scope="module")
def served(start_predictor: Callable[..., str], mlflow_uri: str, redis_url: str, base_env: dict[str, str],
           mlflow_credentials: p.MlflowCredentials, log_dir: Path) -> Iterator[dict[str, Pair]]:
    stamp = int(time.time() * 1000) % 10**8
    texts, labels = sms(400)
    train = taxi_frame(500)
    taxi = taxi_pipeline(train)
    models = {
        "text": (f"protocol-text-{stamp}", text_pipeline(texts, labels), pd.DataFrame({"text": texts[:2]}),
                 "text-classification"),
        "tabular": (f"protocol-taxi-{stamp}", taxi, train.head(3), "tabular-regression"),
    }
    procs, pairs = [], {}
    for kind, (name, model, example, task) in models.items():
        version = register(mlflow_uri, name, model, example, task)
        promote(mlflow_uri, redis_url, base_env["MODEL_EVENTS_CHANNEL"], name, version)
        port = p.free_port()
        cmd = [str(p.VENV_BIN / "mlflow"), "models", "serve", "-m", f"models:/{name}/{version}",
               "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"]
        env = {"MLFLOW_TRACKING_URI": mlflow_uri, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true",
               **mlflow_credentials.env("predictor")}
        procs.append(p.Process(f"mlflow-serve-{name}", cmd, env, log_dir).start())
        ours = start_predictor(name)
        wait_for(lambda url=ours, v=version: served_version(url) == v, timeout=60, what=f"{kind} version served")
        pairs[kind] = Pair(f"http://127.0.0.1:{port}", ours)
    try:
        for proc, pair in zip(procs, pairs.values(), strict=True):
            proc.wait_http(f"{pair.theirs}/ping", timeout=120)
        yield pairs
    finally:
        for proc in procs:
            proc.stop()


def parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    return buffer.getvalue()


def error_code(answer: httpx.Response) -> str | None:
    """MLflow's ``error_code``; None for a body that is not a JSON object (MLflow answers a 415 in plain text)."""
    try:
        body = answer.json()
    except ValueError:
        return None
    return body.get("error_code") if isinstance(body, dict) else None


def alike(ours: list[Any], theirs: list[Any]) -> bool:
    """Labels equal, numbers equal up to float formatting (orjson and the json module print them differently)."""
    return ours == (theirs if all(isinstance(v, str) for v in theirs) else pytest.approx(theirs, rel=1e-9))


def assert_alike(theirs: httpx.Response, ours: httpx.Response, phrase: str | None) -> None:
    assert ours.status_code == theirs.status_code, (theirs.text[:500], ours.text[:500])
    if theirs.status_code == 200:
        assert alike(ours.json()["predictions"], theirs.json()["predictions"]), (theirs.text, ours.text)
        return
    body = ours.json()  # always JSON here, in MLflow's error shape
    assert body["message"] and body["detail"] == body["message"]
    if (code := error_code(theirs)) is not None:
        assert body["error_code"] == code, (theirs.text[:500], ours.text[:500])
    if phrase is not None:
        assert phrase in theirs.text and phrase in body["message"], (theirs.text[:500], body["message"])


def split(rows: list[list[Any]], columns: list[str], **extra: Any) -> bytes:
    return orjson.dumps({"dataframe_split": {"columns": columns, "data": rows, **extra}})


RECORDS = orjson.dumps({"dataframe_records": [{"text": t} for t in TEXTS]})
FORMAT_KEYS = "The input must be a JSON dictionary with exactly one of the input fields"

# (case, content, content type, a phrase both messages hold)
COMMON: list[tuple[str, bytes, str, str | None]] = [
    ("malformed JSON", b"this is,,,, not valid json", JSON, "Ensure that input is a valid JSON formatted string"),
    ("not UTF-8", b"\xff\xfe", JSON, "Ensure that input is a valid JSON formatted string"),
    ("a number", b"1", JSON, FORMAT_KEYS),
    ("a string", b'"1"', JSON, FORMAT_KEYS),
    ("a list", b"[1]", JSON, "Received a list"),
    ("no format key", b'{"not": "a serialized dataframe"}', JSON, FORMAT_KEYS),
    ("two format keys", b'{"dataframe_records": [], "dataframe_split": {"data": []}}', JSON, FORMAT_KEYS),
    ("split as records", b'{"dataframe_split": [{"text": "a"}]}', JSON, "Dataframe split format must be a dictionary"),
    ("records as split", b'{"dataframe_records": {"columns": ["text"], "data": [["a"]]}}', JSON,
     "Dataframe records format must be a list of records"),
    ("index longer than data", split([["a"], ["b"], ["c"]], ["text"], index=[1, 2]), JSON,
     "Provided dataframe_split field is not a valid dataframe representation"),
    ("another column", orjson.dumps({"dataframe_records": [{"message": "a"}]}), JSON, "Model is missing inputs"),
    ("empty records", b'{"dataframe_records": []}', JSON, None),
    ("empty split", split([], ["text"]), JSON, None),
    ("empty instances", b'{"instances": []}', JSON, None),
    ("empty inputs", b'{"inputs": []}', JSON, None),
    ("format parameter", RECORDS, f"{JSON}; format=pandas-split", "Unrecognized content type parameters: format"),
    ("other parameter", RECORDS, f"{JSON}; something=something", "Unrecognized content type parameters"),
    ("latin-1", RECORDS, f"{JSON}; charset=latin-1", "only supports UTF-8"),
    ("utf8 spelled without the dash", RECORDS, f"{JSON}; charset=utf8", "only supports UTF-8"),
    ("UTF-8", RECORDS, f"{JSON}; charset=UTF-8", None),
    ("unknown type", RECORDS, "not_a_supported_content_type", "only supports the following content types"),
    ("x-parquet", RECORDS, "application/x-parquet", "only supports the following content types"),
    ("empty CSV", b"", "text/csv", "Failed to parse input as a Pandas DataFrame"),
    ("CSV of other columns", b"a,b\n1,2\n", "text/csv", "Model is missing inputs"),
    ("CSV header only", b"text\n", "text/csv", None),
    ("not Parquet", b"not parquet", CONTENT_TYPE_PARQUET, "Failed to parse input as a Pandas DataFrame"),
    ("Parquet of other columns", parquet(pd.DataFrame({"other": [1]})), CONTENT_TYPE_PARQUET,
     "Model is missing inputs"),
]

TEXT_ONLY: list[tuple[str, bytes, str, str | None]] = [
    ("split", split([[t] for t in TEXTS], ["text"]), JSON, None),
    ("split with its index", split([[t] for t in TEXTS], ["text"], index=[7, 3]), JSON, None),
    ("index shorter than data", split([["a"]], ["text"], index=[1, 2]), JSON,
     "Provided dataframe_split field is not a valid dataframe representation"),
    ("records", RECORDS, JSON, None),
    ("a number for a text", b'{"dataframe_records": [{"text": 5}]}', JSON, None),
    ("Parquet", parquet(pd.DataFrame({"text": TEXTS})), CONTENT_TYPE_PARQUET, None),
]

FRAME = taxi_frame(4, seed=5)
TABULAR_ONLY: list[tuple[str, bytes, str, str | None]] = [
    ("records", orjson.dumps({"dataframe_records": FRAME.to_dict(orient="records")}), JSON, None),
    ("a string for a number", b'{"dataframe_records": [{"distance_km": "far", "passengers": 1, "vendor": "a"}]}',
     JSON, "Failed to convert column distance_km"),
    ("a missing column", b'{"dataframe_records": [{"distance_km": 1.0, "vendor": "a"}]}', JSON,
     "Model is missing inputs"),
    ("index shorter than data", split([["a"]], ["text"], index=[1, 2]), JSON, "Model is missing inputs"),
    ("Parquet", parquet(FRAME), CONTENT_TYPE_PARQUET, None),
    ("CSV", FRAME.to_csv(index=False).encode(), "text/csv; charset=utf-8", None),
]

CASES = ([pytest.param("text", *case[1:], id=f"text: {case[0]}") for case in COMMON + TEXT_ONLY]
         + [pytest.param("tabular", *case[1:], id=f"tabular: {case[0]}") for case in COMMON + TABULAR_ONLY])


@pytest.mark.parametrize(("kind", "content", "content_type", "phrase"), CASES)
def test_invocations_answer_as_mlflow_serve(served: dict[str, Pair], kind: str, content: bytes, content_type: str,
                                            phrase: str | None) -> None:
    theirs, ours = served[kind].post(content, content_type)
    assert_alike(theirs, ours, phrase)


@pytest.mark.parametrize("path", ["/ping", "/version"])
def test_ping_and_version_answer_as_mlflow_serve(served: dict[str, Pair], path: str) -> None:
    pair = served["text"]
    theirs, ours = (httpx.get(f"{url}{path}", timeout=10) for url in (pair.theirs, pair.ours))
    assert theirs.status_code == ours.status_code == 200
    assert ours.text == theirs.text
    if path == "/version":
        assert ours.text == mlflow.__version__


def test_mlflows_own_client_waits_for_and_scores_through_the_predictor(served: dict[str, Pair]) -> None:
    for kind, data in (("text", pd.DataFrame({"text": TEXTS})), ("tabular", FRAME)):
        host, port = served[kind].ours.removeprefix("http://").split(":")
        client = ScoringServerClient(host, int(port))
        client.wait_server_ready(timeout=10)
        assert client.get_version() == mlflow.__version__
        ours = client.invoke(data).get_predictions(predictions_format="ndarray").tolist()
        host, port = served[kind].theirs.removeprefix("http://").split(":")
        theirs = ScoringServerClient(host, int(port)).invoke(data).get_predictions(predictions_format="ndarray")
        assert len(ours) == len(data) and alike(ours, theirs.tolist())


def test_the_size_limits_stay(served: dict[str, Pair]) -> None:
    """Beyond MLflow: more rows than MAX_INSTANCES (1,000 by default) is a 422, a body over MAX_BODY_BYTES a
    413, both in JSON."""
    many = split([["a"]] * 1001, ["text"])
    answer = httpx.post(f"{served['text'].ours}/invocations", content=many, headers={"content-type": JSON})
    assert answer.status_code == 422 and "at most 1000 rows" in answer.json()["message"]
    huge = split([["a" * 1_100_000]], ["text"])
    answer = httpx.post(f"{served['text'].ours}/invocations", content=huge, headers={"content-type": JSON})
    assert answer.status_code == 413 and answer.json()["detail"]
