"""A tabular regression model: records validated against the signature, PSI drift, MAE feedback; MLflow's
scoring protocol on /invocations compared answer for answer with `mlflow models serve`; and the polling
fallback with Redis unreachable (no events, no feedback store: serving still follows the alias)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tests.predictor.models import (
    fare,
    metric_value,
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
from tests.support.auth import ADMIN

SPEC = {"name": "x", "task": "tabular-regression",
        "data": {"uri": "taxi.csv", "feature_columns": ["distance_km", "passengers", "vendor"],
                 "target_column": "fare"},
        "metric": {"name": "mae", "higher_is_better": False, "threshold": 2.0},
        "drift": {"psi_threshold": 0.25, "js_threshold": 0.1, "window_size": 200}}


class Tabular:
    def __init__(self, url: str, name: str, version: str) -> None:
        self.url, self.name, self.version = url, name, version

    def predict(self, instances: object, **extra: object) -> httpx.Response:
        return httpx.post(f"{self.url}/predict", json={"instances": instances, **extra}, timeout=10)


@pytest.fixture(scope="module")
def tabular(start_predictor: Callable[..., str], mlflow_uri: str, redis_url: str,
            base_env: dict[str, str]) -> Tabular:
    name = f"pred-taxi-{int(time.time() * 1000) % 10**8}"
    train = taxi_frame(1000)
    model = taxi_pipeline(train)
    version = register(mlflow_uri, name, model, train.head(3), "tabular-regression", train,
                       model.predict(train), SPEC)
    promote(mlflow_uri, redis_url, base_env["MODEL_EVENTS_CHANNEL"], name, version)
    url = start_predictor(name)
    wait_for(lambda: served_version(url) == version, timeout=60, what="tabular version served")
    return Tabular(url, name, version)


def test_records_are_scored(tabular: Tabular) -> None:
    rows = taxi_frame(3, seed=9)
    answer = tabular.predict(rows.to_dict(orient="records"))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["predictions"] == pytest.approx(fare(rows).tolist(), abs=1e-6)
    assert body["model_version"] == tabular.version
    model = httpx.get(f"{tabular.url}/model").json()
    assert model["task"] == "tabular-regression" and model["classes"] is None
    assert [c["name"] for c in model["inputs"]] == ["distance_km", "passengers", "vendor"]
    assert metric_value(tabular.url, "predictor_prediction_value_count", model_name=tabular.name) >= 3


@pytest.mark.parametrize(("instances", "field", "reason"), [
    ([{"distance_km": 1.0, "vendor": "a"}], "instances[0].passengers", "missing required column"),
    ([{"distance_km": 1.0, "passengers": 1, "vendor": "a"}, {"distance_km": "far", "passengers": 1, "vendor": "a"}],
     "instances[1].distance_km", "expected number, got string"),
    ([{"distance_km": 1.0, "passengers": 1.5, "vendor": "a"}], "instances[0].passengers", "expected integer"),
    ([{"distance_km": 1.0, "passengers": 1, "vendor": 7}], "instances[0].vendor", "expected string"),
    (["a text"], "instances[0]", "expected an object"),
])
def test_records_are_validated_against_the_signature(tabular: Tabular, instances: list, field: str,
                                                     reason: str) -> None:
    answer = tabular.predict(instances)
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == field and reason in answer.json()["detail"]


def test_probabilities_are_for_classifiers_only(tabular: Tabular) -> None:
    answer = tabular.predict([{"distance_km": 1.0, "passengers": 1, "vendor": "a"}], probabilities=True)
    assert answer.status_code == 422 and "classifiers" in answer.json()["detail"]


def test_value_feedback_gives_live_mae(tabular: Tabular) -> None:
    rid = tabular.predict([{"distance_km": 10.0, "passengers": 1, "vendor": "a"}]).json()["request_id"]
    answer = httpx.post(f"{tabular.url}/feedback", json={"request_id": rid, "value": 20.8 + 3.0},
                        headers=ADMIN)
    assert answer.status_code == 200, answer.text
    assert answer.json()["absolute_error"] == pytest.approx(3.0, abs=1e-6)
    assert metric_value(tabular.url, "predictor_live_mae", model_name=tabular.name) == pytest.approx(3.0, abs=1e-6)
    wrong_kind = httpx.post(f"{tabular.url}/feedback", json={"request_id": rid, "label": "x"}, headers=ADMIN)
    assert wrong_kind.status_code == 422 and "value" in wrong_kind.json()["detail"]


def test_psi_drift_crosses_on_a_shifted_feature(tabular: Tabular) -> None:
    same = taxi_frame(200, seed=21)
    for i in range(0, 200, 50):
        assert tabular.predict(same.iloc[i:i + 50].to_dict(orient="records")).status_code == 200
    wait_for(lambda: metric_value(tabular.url, "predictor_drift_window_samples", model_name=tabular.name) == 200,
             timeout=10, what="a full window")
    time.sleep(1.2)
    assert metric_value(tabular.url, "predictor_drift_score", model_name=tabular.name, feature="overall") < 0.25
    assert metric_value(tabular.url, "predictor_drift_threshold", model_name=tabular.name) == 0.25

    shifted = taxi_frame(200, seed=22, shift=6.0)
    for i in range(0, 200, 50):
        assert tabular.predict(shifted.iloc[i:i + 50].to_dict(orient="records")).status_code == 200
    wait_for(lambda: metric_value(tabular.url, "predictor_drift_score", model_name=tabular.name,
                                  feature="distance_km") > 0.25, timeout=10, what="distance drift")
    assert metric_value(tabular.url, "predictor_drift_score", model_name=tabular.name, feature="vendor") < 0.25
    assert metric_value(tabular.url, "predictor_drift_score", model_name=tabular.name, feature="overall") > 0.25


# --- MLflow scoring protocol ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def text_model(start_predictor: Callable[..., str], mlflow_uri: str, redis_url: str,
               base_env: dict[str, str]) -> Tabular:
    name = f"pred-compat-{int(time.time() * 1000) % 10**8}"
    texts, labels = sms(400)
    version = register(mlflow_uri, name, text_pipeline(texts, labels), pd.DataFrame({"text": texts[:2]}),
                       "text-classification")
    promote(mlflow_uri, redis_url, base_env["MODEL_EVENTS_CHANNEL"], name, version)
    url = start_predictor(name)
    wait_for(lambda: served_version(url) == version, timeout=60, what="text version served")
    return Tabular(url, name, version)


@pytest.fixture(scope="module")
def mlflow_serve(mlflow_uri: str, mlflow_credentials: p.MlflowCredentials, log_dir: Path, tabular: Tabular,
                 text_model: Tabular) -> Iterator[dict[str, str]]:
    """`mlflow models serve` (MLflow's own scoring server) for both models, as the predictor's MLflow user."""
    procs, urls = [], {}
    for model in (tabular, text_model):
        port = p.free_port()
        cmd = [str(p.VENV_BIN / "mlflow"), "models", "serve", "-m", f"models:/{model.name}/{model.version}",
               "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"]
        env = {"MLFLOW_TRACKING_URI": mlflow_uri, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true",
               **mlflow_credentials.env("predictor")}
        procs.append(p.Process(f"mlflow-serve-{model.name}", cmd, env, log_dir).start())
        urls[model.name] = f"http://127.0.0.1:{port}"
    try:
        for proc, url in zip(procs, urls.values(), strict=True):
            proc.wait_http(f"{url}/ping", timeout=120)
        yield urls
    finally:
        for proc in procs:
            proc.stop()


def both(mlflow_url: str, predictor_url: str, content: bytes, content_type: str) -> tuple[httpx.Response, ...]:
    headers = {"content-type": content_type}
    return tuple(httpx.post(f"{url}/invocations", content=content, headers=headers, timeout=30)
                 for url in (mlflow_url, predictor_url))


TEXTS = ["WINNER!! Claim your free prize now, call 09061701461", "Are we still meeting for lunch tomorrow?"]


@pytest.mark.parametrize("payload", [
    {"dataframe_split": {"columns": ["text"], "data": [[t] for t in TEXTS]}},
    {"dataframe_split": {"index": [7, 3], "columns": ["text"], "data": [[t] for t in TEXTS]}},
    {"dataframe_records": [{"text": t} for t in TEXTS]},
    {"instances": [{"text": t} for t in TEXTS]},
    {"inputs": {"text": TEXTS}},
    {"inputs": [{"text": t} for t in TEXTS]},
])
def test_invocations_json_matches_mlflow_serve_text(mlflow_serve: dict[str, str], text_model: Tabular,
                                                    payload: dict) -> None:
    import orjson

    ours_mlflow, ours = both(mlflow_serve[text_model.name], text_model.url, orjson.dumps(payload), "application/json")
    assert ours_mlflow.status_code == 200, ours_mlflow.text
    assert ours.status_code == 200, ours.text
    assert ours.json() == ours_mlflow.json()
    assert ours.json()["predictions"] == ["spam", "ham"]


@pytest.mark.parametrize("payload", [
    {"dataframe_records": [{"text": 5}, {"text": TEXTS[1]}]},
    {"dataframe_split": {"columns": ["message"], "data": [[t] for t in TEXTS]}},
    {"dataframe_split": {"columns": ["text"], "data": [[t, t] for t in TEXTS]}},
    {"dataframe_records": [{"text": TEXTS[0], "extra": 1}], "params": {"x": 1}},
])
def test_odd_text_invocations_answer_like_mlflow_serve(mlflow_serve: dict[str, str], text_model: Tabular,
                                                       payload: dict) -> None:
    """Shapes off the JSON fast path (a number for a text, another column, two values a row, params) are
    parsed by MLflow's own code: both servers accept or refuse them alike."""
    import orjson

    theirs, ours = both(mlflow_serve[text_model.name], text_model.url, orjson.dumps(payload), "application/json")
    assert (theirs.status_code == 200) == (ours.status_code == 200), (theirs.text, ours.text)
    assert ours.status_code < 500, ours.text
    if ours.status_code == 200:
        assert ours.json() == theirs.json()


def test_invocations_csv_matches_mlflow_serve(mlflow_serve: dict[str, str], text_model: Tabular,
                                             tabular: Tabular) -> None:
    csv_text = pd.DataFrame({"text": TEXTS}).to_csv(index=False).encode()
    theirs, ours = both(mlflow_serve[text_model.name], text_model.url, csv_text, "text/csv")
    assert theirs.status_code == ours.status_code == 200
    assert ours.json() == theirs.json()
    frame = taxi_frame(4, seed=3)
    theirs, ours = both(mlflow_serve[tabular.name], tabular.url, frame.to_csv(index=False).encode(),
                        "text/csv; charset=utf-8")
    assert theirs.status_code == ours.status_code == 200
    assert ours.json()["predictions"] == pytest.approx(theirs.json()["predictions"], rel=1e-9)


def test_invocations_tabular_matches_mlflow_serve(mlflow_serve: dict[str, str], tabular: Tabular) -> None:
    import orjson

    frame = taxi_frame(5, seed=4)
    for payload in ({"dataframe_split": frame.to_dict(orient="split") | {"index": None}},
                    {"dataframe_records": frame.to_dict(orient="records")},
                    {"inputs": frame.to_dict(orient="list")}):
        payload = {k: {kk: vv for kk, vv in v.items() if vv is not None} if isinstance(v, dict) and "columns" in v
                   else v for k, v in payload.items()}
        theirs, ours = both(mlflow_serve[tabular.name], tabular.url, orjson.dumps(payload), "application/json")
        assert theirs.status_code == ours.status_code == 200, (theirs.text, ours.text)
        assert ours.json()["predictions"] == pytest.approx(theirs.json()["predictions"], rel=1e-9)


@pytest.mark.parametrize(("content", "content_type"), [
    (b'{"dataframe_split": ', "application/json"),
    (b'{"unknown_key": [1]}', "application/json"),
    (b'{"dataframe_records": [{"distance_km": "far", "passengers": 1, "vendor": "a"}]}', "application/json"),
    (b"a,b\n1,2\n", "text/csv"),
])
def test_bad_invocations_are_4xx_on_both(mlflow_serve: dict[str, str], tabular: Tabular, content: bytes,
                                         content_type: str) -> None:
    theirs, ours = both(mlflow_serve[tabular.name], tabular.url, content, content_type)
    assert 400 <= theirs.status_code < 500
    assert 400 <= ours.status_code < 500, ours.text
    assert ours.json()["message"]


def test_invocations_unsupported_content_type(tabular: Tabular) -> None:
    answer = httpx.post(f"{tabular.url}/invocations", content=b"x", headers={"content-type": "application/xml"})
    assert answer.status_code == 415


def test_invocations_refuse_a_charset_other_than_utf8_on_every_path(text_model: Tabular) -> None:
    """The JSON shapes read without MLflow's parsing keep its content-type rules: UTF-8 only."""
    import orjson

    body = orjson.dumps({"dataframe_split": {"columns": ["text"], "data": [[t] for t in TEXTS]}})
    for content_type in ("application/json; charset=latin-1", "text/csv; charset=latin-1"):
        answer = httpx.post(f"{text_model.url}/invocations", content=body, headers={"content-type": content_type})
        assert answer.status_code == 415, (content_type, answer.text)
        assert "UTF-8" in answer.json()["message"]
    assert httpx.post(f"{text_model.url}/invocations", content=body,
                      headers={"content-type": "application/json; charset=utf-8"}).json()["predictions"] == [
        "spam", "ham"]


# --- polling fallback -----------------------------------------------------------------------------------

def test_polling_follows_the_alias_without_events_or_redis(start_predictor: Callable[..., str], mlflow_uri: str,
                                                           tabular: Tabular) -> None:
    dead_redis = f"redis://127.0.0.1:{p.free_port()}/0"
    url = start_predictor(tabular.name, {"REDIS_URL": dead_redis, "POLL_INTERVAL_SECONDS": "1"})
    wait_for(lambda: served_version(url) == tabular.version, timeout=60, what="first version by polling")
    row = {"distance_km": 3.0, "passengers": 2, "vendor": "b"}
    answer = httpx.post(f"{url}/predict", json={"instances": [row]})
    assert answer.status_code == 200, answer.text
    assert httpx.get(f"{url}/model").json()["events_connected"] is False

    train = taxi_frame(300, seed=7)
    version = register(mlflow_uri, tabular.name, taxi_pipeline(train), train.head(2), "tabular-regression")
    promote(mlflow_uri, None, None, tabular.name, version)  # no event at all
    wait_for(lambda: served_version(url) == version, timeout=20, what="new version by polling")
    assert httpx.get(f"{url}/model").json()["last_swap"]["reason"] == "poll"
    feedback = httpx.post(f"{url}/feedback", json={"request_id": answer.json()["request_id"], "value": 9.0},
                          headers=ADMIN)
    assert feedback.status_code == 503 and "unavailable" in feedback.json()["detail"]
