"""Hostile input: property-based requests over every service's OpenAPI document find no 5xx, and the classic
attacks (oversized and deeply nested bodies, huge strings, NaN and infinities, wrong content types, unicode
edge cases, path traversal, SSRF to the stack's own addresses) all get a 4xx with a reason."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.faults.support import SPAM
from tests.support.auth import ADMIN, SERVICE_TOKEN, TRAINER_TOKEN, bearer

pytestmark = pytest.mark.slow

EXAMPLES_PER_OPERATION = 12
# The least the fuzz above sends per service, however slow the machine (about what it sends: see its output).
MIN_CASES = {"registry": 250, "trainer": 100, "predictor": 40}
DEEP = 100_000
SERVICE = bearer(SERVICE_TOKEN)  # the gate takes the trainer service's token only
ALERTING = bearer(TRAINER_TOKEN)  # what Grafana and Alertmanager send
# Bodies no endpoint can accept (the others, e.g. a NUL inside a text to classify, may be valid input: they
# must only never cause a 5xx).
ALWAYS_INVALID = {"deeply nested arrays", "deeply nested objects", "NaN", "Infinity", "invalid UTF-8", "XML",
                  "form", "plain text", "truncated JSON", "JSON scalar"}
# The alert webhooks ignore unknown fields by contract (Grafana and Alertmanager add fields over time), so
# a NaN in a field they never read is accepted and does nothing.
EXTRA_FIELDS_OK = {"NaN", "Infinity"}


# A 503 is right only while the service is not serving: its detail gives one of the documented reasons (the
# services' READMEs) and its /ready says 503 at that moment. Any other 503 is a server error like the rest.
NOT_SERVING = {
    "registry": re.compile(r"MLflow unavailable|registry database unavailable|another change to model .* is still "
                           r"running"),
    "trainer": re.compile(r"the job (store \(Redis|queue \(broker)[^)]*\) is unreachable"
                          r"|registry-proxy is unreachable"),
    "predictor": re.compile(r"no production version of model .* is being served yet|the feedback store \(Redis\) is "
                            r"unavailable"),
}


def not_serving(service: str, base_url: str, response: httpx.Response) -> bool:
    """Whether a 503 is the service honestly saying it cannot serve (see NOT_SERVING)."""
    try:
        body = response.json()
    except ValueError:
        return False
    reason = body.get("detail") if isinstance(body, dict) else None
    if not isinstance(reason, str) or not NOT_SERVING[service].search(reason):
        return False
    return httpx.get(f"{base_url}/ready", timeout=30).status_code == 503


def fuzz(service: str, base_url: str, headers: dict[str, str],
         per_path: dict[str, dict[str, str]] | None = None) -> tuple[dict[str, int], list[str]]:
    """Runs EXAMPLES_PER_OPERATION generated requests (fewer only where Hypothesis runs out of distinct inputs) for
    every operation of the service's OpenAPI document, with ``headers`` or those ``per_path`` gives for an
    operation's path template; returns (requests sent per operation, server errors seen)."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    sent: dict[str, int] = {}
    errors: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        sent[f"{operation.method.upper()} {operation.path}"] = 0

        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, derandomize=True,
                  phases=[Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case: schemathesis.Case) -> None:
            response = case.call(base_url=base_url, headers=(per_path or {}).get(case.operation.path, headers),
                                 timeout=60)
            sent[f"{case.operation.method.upper()} {case.operation.path}"] += 1
            if response.status_code < 500:
                return
            if response.status_code == 503 and not_serving(service, base_url, response):
                return
            errors.append(f"{case.method} {case.formatted_path} {case.body!r:.300} -> "
                          f"{response.status_code} {response.text[:300]}")

        check()
    return sent, errors


@pytest.mark.parametrize("service", ["registry", "trainer", "predictor"])
def test_property_based_requests_over_the_openapi_find_no_server_error(
    service: str, registry_url: str, trainer_url: str, served_model: tuple[str, str, list[str]]
) -> None:
    """12 generated requests per operation of each service's OpenAPI (fewer only for an operation with fewer
    distinct inputs; with valid tokens, so the generated bodies reach the handlers), at least MIN_CASES in all,
    get no 5xx; a 503 only with a documented reason while the service's /ready says it is not serving."""
    url, headers = {
        "registry": (registry_url, ADMIN),
        "trainer": (trainer_url, ADMIN),
        "predictor": (served_model[0], ADMIN),
    }[service]
    per_path = {"/models/{name}/gate": SERVICE} if service == "registry" else None
    started = time.monotonic()
    sent, errors = fuzz(service, url, headers, per_path)
    print(f"{service}: {sum(sent.values())} generated requests in {time.monotonic() - started:.0f}s: {sent}")
    assert [operation for operation, count in sent.items() if count == 0] == []
    assert sum(sent.values()) >= MIN_CASES[service]
    assert errors == []


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)


def test_property_based_json_bodies_to_the_predictor(served_model: tuple[str, str, list[str]]) -> None:
    """The predictor's OpenAPI leaves /predict, /invocations and /feedback bodies open, so schemathesis has
    little to generate there: 120 arbitrary JSON documents over the three (NaN and infinities included, also
    wrapped as {"instances": ...} and {"request_id", "label"}) never get a 5xx."""
    url = served_model[0]
    errors: list[str] = []

    with httpx.Client(base_url=url, timeout=60) as client:
        @settings(max_examples=120, deadline=None, database=None, derandomize=True, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(value=JSON, path=st.sampled_from(["/predict", "/invocations", "/feedback"]),
               wrap=st.sampled_from(["raw", "instances", "feedback", "inputs"]))
        def check(value: object, path: str, wrap: str) -> None:
            body = {"raw": value, "instances": {"instances": value}, "inputs": {"inputs": value},
                    "feedback": {"request_id": value, "label": value}}[wrap]
            r = client.post(path, content=json.dumps(body).encode(),
                            headers={**ADMIN, "content-type": "application/json"})
            if r.status_code >= 500:
                errors.append(f"{path} {body!r:.200} -> {r.status_code} {r.text[:200]}")

        check()
    assert errors == []


def hostile_bodies() -> list[tuple[str, bytes, str]]:
    """(label, body, content type) of requests no JSON endpoint may answer with a 5xx."""
    return [
        ("deeply nested arrays", b"[" * DEEP + b"]" * DEEP, "application/json"),
        ("deeply nested objects", b'{"a":' * DEEP + b"1" + b"}" * DEEP, "application/json"),
        ("NaN", b'{"instances": [NaN], "version": NaN, "challenger_metrics": {"f1_macro": NaN}, "reason": NaN}',
         "application/json"),
        ("Infinity", b'{"instances": [Infinity], "version": "1", "challenger_metrics": {"f1_macro": -Infinity}}',
         "application/json"),
        ("lone surrogate", b'{"instances": ["\\ud800"], "reason": "\\udfff", "comment": "\\ud800",'
                           b' "model_name": "\\ud800"}', "application/json"),
        ("NUL characters", b'{"instances": ["a\\u0000b"], "reason": "\\u0000", "comment": "\\u0000",'
                           b' "model_name": "a\\u0000"}', "application/json"),
        ("invalid UTF-8", b'{"instances": ["\xff\xfe\xfa"], "reason": "\xc3\x28"}', "application/json"),
        ("BOM and RTL overrides", '\ufeff{"instances": ["\u202e\u0000\U0001F4A9"], "reason": "\u202e"}'.encode(),
         "application/json"),
        ("XML", b"<?xml version='1.0'?><instances><i>spam</i></instances>", "application/xml"),
        ("form", b"instances=spam&reason=x", "application/x-www-form-urlencoded"),
        ("plain text", b"free entry to win cash", "text/plain"),
        ("truncated JSON", b'{"instances": ["a"', "application/json"),
        ("JSON scalar", b"42", "application/json"),
        ("huge string", b'{"instances": ["' + b"a" * 3_000_000 + b'"], "reason": "' + b"b" * 100 + b'"}',
         "application/json"),
    ]


def post_targets(registry_url: str, trainer_url: str, predictor_url: str, model: str) -> list[tuple[str, dict]]:
    return [
        (f"{predictor_url}/predict", {}),
        (f"{predictor_url}/invocations", {}),
        (f"{predictor_url}/feedback", ADMIN),
        (f"{registry_url}/models/{model}/promote", ADMIN),
        (f"{registry_url}/models/{model}/incidents", ADMIN),
        (f"{registry_url}/models/{model}/gate", SERVICE),
        (f"{registry_url}/decisions/1/approve", ADMIN),
        (f"{trainer_url}/retrain", ADMIN),
        (f"{trainer_url}/alerts/grafana", ALERTING),
    ]


def test_hostile_bodies_get_a_client_error(registry_url: str, trainer_url: str,
                                           served_model: tuple[str, str, list[str]]) -> None:
    """Deep nesting, NaN/Infinity, lone surrogates, NUL characters, invalid UTF-8, BOM/RTL characters, XML,
    forms, plain text, truncated JSON, scalars and multi-megabyte strings sent to every JSON endpoint of the
    three services (with valid tokens, on a model that exists) never get a 5xx; the ones no endpoint can
    accept get a 4xx with a reason; the services answer /health afterwards."""
    predictor, model, _ = served_model
    failures = []
    with httpx.Client(timeout=120) as client:
        for url, headers in post_targets(registry_url, trainer_url, predictor, model):
            lenient = "/alerts/" in url
            for label, body, content_type in hostile_bodies():
                try:
                    r = client.post(url, content=body, headers={**headers, "content-type": content_type})
                except httpx.HTTPError as exc:
                    failures.append(f"{label} → {url}: {type(exc).__name__} {exc}")
                    continue
                invalid = label in ALWAYS_INVALID and not (lenient and label in EXTRA_FIELDS_OK)
                if r.status_code >= 500 or (invalid and not 400 <= r.status_code < 500):
                    failures.append(f"{label} → {url}: {r.status_code} {r.text[:200]}")
                elif not r.text.strip():
                    failures.append(f"{label} → {url}: {r.status_code} with an empty body")
        for base in (registry_url, trainer_url, predictor):
            assert client.get(f"{base}/health").status_code == 200
    assert failures == [], "\n".join(failures)


def test_valid_bodies_with_unstorable_text_get_a_client_error(registry_url: str, trainer_url: str,
                                                               served_model: tuple[str, str, list[str]]) -> None:
    """Otherwise valid registry-proxy and trainer-api bodies whose free-text fields hold a NUL character (which
    Postgres cannot store) or a lone surrogate get a 4xx naming the problem, never a 5xx."""
    _, model, _ = served_model
    failures = []
    for text in ("nul \u0000 inside", "surrogate \ud800 inside"):
        requests = [
            (f"{registry_url}/models/{model}/incidents", {"reason": text}),
            (f"{registry_url}/models/{model}/rollback", {"reason": text}),
            (f"{registry_url}/models/{model}/promote", {"version": "999", "reason": text}),
            (f"{registry_url}/decisions/999999/approve", {"comment": text}),
            (f"{registry_url}/models/{model}/gate",
             {"job_id": text, "run_id": "0" * 32, "model_uri": "models:/m-" + "0" * 32,
              "challenger_metrics": {"f1_macro": 0.9}, "requested_by": text, "production_error": text,
              "spec_policy": {"metric": "f1_macro", "threshold": 0.5}}),
            (f"{trainer_url}/retrain", {"model_name": model, "idempotency_key": text}),
        ]
        for url, body in requests:
            raw = json.dumps(body).encode()  # json escapes the surrogate as \ud800, as a hostile client would
            headers = SERVICE if url.endswith("/gate") else ADMIN
            r = httpx.post(url, content=raw, headers={**headers, "content-type": "application/json"}, timeout=60)
            if not 400 <= r.status_code < 500:
                failures.append(f"{text!r} → {url}: {r.status_code} {r.text[:200]}")
    assert failures == [], "\n".join(failures)


def test_oversized_bodies_are_refused_with_413(registry_url: str, trainer_url: str,
                                               served_model: tuple[str, str, list[str]]) -> None:
    """A body over the predictor's MAX_BODY_BYTES (1 MB by default) is a 413 on /predict and /invocations,
    and one over 2 MB (mlops_common.errors.MAX_JSON_BODY_BYTES) on registry-proxy's and trainer-api's JSON
    routes, whether announced by Content-Length or streamed in chunks, before it is read into memory."""
    predictor, model, _ = served_model
    admin = {**ADMIN, "content-type": "application/json"}
    huge = b'{"reason": "' + b"x" * 3_000_000 + b'"}'
    with httpx.Client(timeout=120) as client:
        for url, headers in ((f"{registry_url}/models/{model}/incidents", admin), (f"{trainer_url}/retrain", admin),
                             (f"{trainer_url}/alerts/grafana", {**ALERTING, "content-type": "application/json"})):
            r = client.post(url, content=huge, headers=headers)
            assert r.status_code == 413, (url, r.status_code, r.text[:200])
            r = client.post(url, content=iter([huge[i:i + 65536] for i in range(0, len(huge), 65536)]),
                            headers=headers)
            assert r.status_code == 413, (url, r.status_code, r.text[:200])
    big = b'{"instances": ["' + b"x" * 2_000_000 + b'"]}'

    def chunked():
        for i in range(0, len(big), 65536):
            yield big[i:i + 65536]

    with httpx.Client(timeout=120) as client:
        for path in ("/predict", "/invocations"):
            r = client.post(f"{predictor}{path}", content=big, headers={"content-type": "application/json"})
            assert r.status_code == 413, r.text
            r = client.post(f"{predictor}{path}", content=chunked(), headers={"content-type": "application/json"})
            assert r.status_code == 413, r.text
        ok = client.post(f"{predictor}/predict", json={"instances": [SPAM]})
        assert ok.status_code == 200, ok.text


def test_dataset_uris_cannot_escape_the_allowed_folders(trainer_url: str, model_name: str) -> None:
    """Path traversal and file:// URIs outside the allowed data folders, and unsupported schemes, are refused
    at POST /retrain with a 422 naming data.uri; nothing is queued."""
    spec = {"task": "text-classification", "metric": {"name": "f1_macro", "threshold": 0.5},
            "candidates": [{"featurizer": {"type": "bow"}, "estimator": {"type": "knn"}}]}
    for uri in ("../../../../../../etc/passwd", "data/../../../../etc/passwd", "/etc/passwd",
                "file:///etc/passwd", "file://localhost/etc/passwd", "/proc/self/environ",
                "data/%2e%2e/%2e%2e/etc/passwd", "gopher://127.0.0.1:6379/_FLUSHALL", "ftp://example.com/a.csv",
                "\\\\evil\\share\\a.csv", "data/sms_spam.csv\u0000.txt"):
        body = {"model_name": model_name,
                "spec": {**spec, "data": {"uri": uri, "text_column": "text", "label_column": "label"}}}
        r = httpx.post(f"{trainer_url}/retrain", json=body, headers=ADMIN, timeout=60)
        assert r.status_code == 422, (uri, r.status_code, r.text)
        assert "uri" in r.text, (uri, r.text)
    jobs = httpx.get(f"{trainer_url}/jobs", params={"model_name": model_name}, timeout=30).json()["jobs"]
    assert jobs == []


def test_dataset_urls_cannot_reach_the_stacks_own_addresses(trainer_url: str, registry_url: str, mlflow_uri: str,
                                                            model_name: str) -> None:
    """An http(s) data.uri whose host is internal (the MLflow server and registry-proxy on 127.0.0.1,
    localhost, ::1, 0.0.0.0, link-local metadata addresses, private networks, decimal-encoded loopback) is
    refused with a 422 before anything is queued (SSRF guard of trainer.datasets, DATA_ALLOWED_HOSTS to allow)."""
    spec = {"task": "text-classification", "metric": {"name": "f1_macro", "threshold": 0.5},
            "candidates": [{"featurizer": {"type": "bow"}, "estimator": {"type": "knn"}}]}
    for uri in (f"{mlflow_uri}/api/2.0/mlflow/experiments/search?max_results=1", f"{registry_url}/audit",
                "http://localhost:6379/", "http://[::1]:5432/", "http://0.0.0.0:8001/models",
                "http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/data.csv", "http://2130706433:8001/",
                "https://127.0.0.1:443/a.csv"):
        body = {"model_name": model_name,
                "spec": {**spec, "data": {"uri": uri, "text_column": "text", "label_column": "label"}}}
        r = httpx.post(f"{trainer_url}/retrain", json=body, headers=ADMIN, timeout=60)
        assert r.status_code == 422, (uri, r.status_code, r.text)
        assert "internal address" in r.text and "DATA_ALLOWED_HOSTS" in r.text, r.text
    jobs = httpx.get(f"{trainer_url}/jobs", params={"model_name": model_name}, timeout=30).json()["jobs"]
    assert jobs == []


def test_internal_hosts_are_reachable_only_when_configured(tmp_path: Path) -> None:
    """DATA_ALLOWED_HOSTS (a host name, an address or a network) is the only way to let a data.uri reach an
    internal address, and a redirect from an allowed host to a refused one is refused at the redirect."""
    from trainer.datasets import DatasetError, DatasetStore

    url = "http://127.0.0.1:9/data.csv"
    with pytest.raises(DatasetError, match="internal address"):
        DatasetStore(tmp_path, [tmp_path], 1024, 2, allowed_hosts=[]).check_uri(url)
    for allowed in (["127.0.0.1"], ["127.0.0.0/8"]):
        assert DatasetStore(tmp_path, [tmp_path], 1024, 2, allowed_hosts=allowed).check_uri(url) == "http"
    store = DatasetStore(tmp_path, [tmp_path], 1024, 2, allowed_hosts=["localhost"])
    with pytest.raises(DatasetError, match="internal address"):
        store.check_uri(url)


def test_upload_filenames_cannot_traverse(trainer_url: str, tmp_path: Path) -> None:
    """An upload whose file name has folders or ``..``, or runs past 255 characters is refused
    with a 422 that names the file name; nothing is written where it points. A plain name is accepted and the
    snapshot is content-addressed."""
    target = tmp_path / "escaped.csv"
    names = [f"../../../../../../..{target}", str(target), "..\\..\\..\\evil.csv", "a/../../b.csv", "..",
             ".." + "/" * 50 + "x.csv", "x" * 300 + ".csv"]
    for name in names:
        content = f"text,label\nhello {name[:10]!r},ham\nwin cash,spam\n".encode()
        r = httpx.post(f"{trainer_url}/datasets", files={"file": (name, content, "text/csv")}, headers=ADMIN,
                       timeout=60)
        assert r.status_code == 422, (name, r.status_code, r.text)
        assert "file name" in r.json()["detail"]
    assert not target.exists()
    assert not Path("/evil.csv").exists()
    plain = ("plain name.csv", b"text,label\nhi,ham\nwin cash,spam\n", "text/csv")
    r = httpx.post(f"{trainer_url}/datasets", files={"file": plain}, headers=ADMIN, timeout=60)
    assert r.status_code == 201, r.text
    assert r.json()["dataset_id"] == r.json()["sha256"]
