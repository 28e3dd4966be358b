"""Rollouts (canaries, shadows, the split predictors follow) against a real registry-proxy, MLflow, Postgres,
Redis and Prometheus.

Prometheus scrapes a tiny exporter the tests control: it serves the predictor's metric names (per-version
requests and latency, shadow comparisons, live accuracy; or only the model-level HTTP series), and each scrape
adds the requests, errors, latencies and agreements the test set for a version, so the rates Prometheus
computes are the ones the test chose. The predictors themselves are not needed: what registry-proxy reads
is Prometheus, and what it writes is the MLflow tag and the Redis event, both checked here."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow.tracking import MlflowClient

from tests.observability import provisioning as prov
from tests.observability.prometheus import Prometheus
from tests.registry.helpers import ADMIN, POLICY, SERVICE, EventTap, Jobs, Receiver, aliases
from tests.support import processes as p
from tests.support.auth import ADMIN_TOKEN, bearer, principal_token

pytestmark = pytest.mark.skipif(prov.PROMETHEUS is None, reason=prov.NO_PROMETHEUS)

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
REQUESTS_PER_SCRAPE = 100
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@dataclass
class Health:
    error_ratio: float = 0.0
    latency_seconds: float = 0.02
    # False: only the model-level HTTP series, as a predictor that does not label by version exports.
    per_version: bool = True
    ok: float = 0.0
    errors: float = 0.0
    buckets: list[float] = field(default_factory=lambda: [0.0] * (len(BUCKETS) + 1))
    latency_sum: float = 0.0


@dataclass
class Shadowing:
    agreement: float = 1.0
    latency_seconds: float = 0.01
    compared: dict[str, float] = field(default_factory=lambda: {"ham": 0.0, "spam": 0.0})
    agreed: dict[str, float] = field(default_factory=lambda: {"ham": 0.0, "spam": 0.0})
    ok: float = 0.0
    buckets: list[float] = field(default_factory=lambda: [0.0] * (len(BUCKETS) + 1))


def histogram(lines: list[str], name: str, labels: str, buckets: list[float], total: float) -> None:
    for bound, count in zip([*map(str, BUCKETS), "+Inf"], buckets, strict=True):
        lines.append(f'{name}_bucket{{{labels},le="{bound}"}} {count}')
    lines.append(f"{name}_count{{{labels}}} {buckets[-1]}")
    lines.append(f"{name}_sum{{{labels}}} {total}")


def observe(buckets: list[float], seconds: float, n: float) -> None:
    for i, le in enumerate(BUCKETS):
        if seconds <= le:
            buckets[i] += n
    buckets[-1] += n


class Exporter:
    """/metrics with the predictor's series per (model, version); counters grow on every scrape: requests and
    latency per version (or only per model), shadow comparisons, and live accuracy gauges."""

    def __init__(self) -> None:
        self.versions: dict[tuple[str, str], Health] = {}
        self.shadows: dict[tuple[str, str], Shadowing] = {}
        self.accuracy: dict[tuple[str, str], float] = {}
        self.lock = threading.Lock()
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                body = exporter.scrape().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.target = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def set(self, model: str, version: str, error_ratio: float = 0.0, latency_seconds: float = 0.02,
            per_version: bool = True) -> None:
        with self.lock:
            health = self.versions.setdefault((model, version), Health())
            health.error_ratio, health.latency_seconds, health.per_version = error_ratio, latency_seconds, per_version

    def shadow(self, model: str, version: str, agreement: float = 1.0) -> None:
        """The version is in shadow: each scrape adds REQUESTS_PER_SCRAPE comparisons, ``agreement`` of them equal."""
        with self.lock:
            self.shadows.setdefault((model, version), Shadowing()).agreement = agreement

    def live_accuracy(self, model: str, version: str, value: float) -> None:
        with self.lock:
            self.accuracy[(model, version)] = value

    def scrape(self) -> str:
        lines = ["# TYPE predictor_http_requests_total counter",
                 "# TYPE predictor_http_request_duration_seconds histogram",
                 "# TYPE predictor_model_requests_total counter",
                 "# TYPE predictor_model_request_duration_seconds histogram",
                 "# TYPE predictor_shadow_compared_total counter",
                 "# TYPE predictor_shadow_agreed_total counter",
                 "# TYPE predictor_shadow_requests_total counter",
                 "# TYPE predictor_shadow_request_duration_seconds histogram",
                 "# TYPE predictor_version_live_accuracy gauge"]
        with self.lock:
            for (model, version), h in self.versions.items():
                errors = REQUESTS_PER_SCRAPE * h.error_ratio
                h.errors += errors
                h.ok += REQUESTS_PER_SCRAPE - errors
                observe(h.buckets, h.latency_seconds, REQUESTS_PER_SCRAPE)
                h.latency_sum += REQUESTS_PER_SCRAPE * h.latency_seconds
                if h.per_version:
                    labels = f'model_name="{model}",model_version="{version}"'
                    lines.append(f'predictor_model_requests_total{{{labels},status="200"}} {h.ok}')
                    lines.append(f'predictor_model_requests_total{{{labels},status="500"}} {h.errors}')
                    histogram(lines, "predictor_model_request_duration_seconds", labels, h.buckets, h.latency_sum)
                else:
                    labels = f'model_name="{model}",handler="/predict",method="POST"'
                    lines.append(f'predictor_http_requests_total{{{labels},status="2xx"}} {h.ok}')
                    lines.append(f'predictor_http_requests_total{{{labels},status="5xx"}} {h.errors}')
                    histogram(lines, "predictor_http_request_duration_seconds", labels, h.buckets, h.latency_sum)
            for (model, version), sh in self.shadows.items():
                labels = f'model_name="{model}",model_version="{version}"'
                for cls in sh.compared:
                    sh.compared[cls] += REQUESTS_PER_SCRAPE / 2
                    sh.agreed[cls] += REQUESTS_PER_SCRAPE / 2 * sh.agreement
                    lines.append(f'predictor_shadow_compared_total{{{labels},label="{cls}"}} {sh.compared[cls]}')
                    lines.append(f'predictor_shadow_agreed_total{{{labels},label="{cls}"}} {sh.agreed[cls]}')
                sh.ok += REQUESTS_PER_SCRAPE
                observe(sh.buckets, sh.latency_seconds, REQUESTS_PER_SCRAPE)
                lines.append(f'predictor_shadow_requests_total{{{labels},outcome="ok"}} {sh.ok}')
                lines.append(f'predictor_shadow_requests_total{{{labels},outcome="shed"}} 0')
                histogram(lines, "predictor_shadow_request_duration_seconds", labels, sh.buckets,
                          sh.ok * sh.latency_seconds)
            for (model, version), value in self.accuracy.items():
                lines.append(f'predictor_version_live_accuracy{{model_name="{model}",model_version="{version}"}} '
                             f"{value}")
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class CanaryStack:
    prometheus: Prometheus
    exporter: Exporter
    receiver: Receiver
    env: dict[str, str]
    log_dir: Path
    port: int = field(default_factory=p.free_port)
    proc: p.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, **env: str) -> None:
        self.proc, _ = p.uvicorn_service("registry-proxy-canary", "registry_proxy.main:app", {**self.env, **env},
                                         self.log_dir, port=self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def restart(self, **env: str) -> None:
        self.stop()
        self.start(**env)

    def has_data(self, model: str, version: str | None, timeout: float = 30) -> None:
        """Waits for Prometheus to hold the version's series (``None``: the model's HTTP series)."""
        query = (f'sum(rate(predictor_model_requests_total{{model_name="{model}",model_version="{version}"}}[5s]))'
                 if version is not None else f'sum(rate(predictor_http_requests_total{{model_name="{model}"}}[5s]))')
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = httpx.get(f"{self.prometheus.url}/api/v1/query", params={"query": query}, timeout=5).json()
            if r["data"]["result"]:
                return
            time.sleep(0.5)
        raise AssertionError(f"Prometheus never had {model} v{version}")

    def no_errors_in_window(self, model: str, version: str, timeout: float = 30) -> None:
        """Waits until the canary analysis' 5 s window holds no error left from an earlier ``exporter.set``."""
        query = (f'sum(rate(predictor_model_requests_total{{model_name="{model}",model_version="{version}",'
                 f'status="500"}}[5s]))')
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = httpx.get(f"{self.prometheus.url}/api/v1/query", params={"query": query}, timeout=5).json()
            if r["data"]["result"] and float(r["data"]["result"][0]["value"][1]) == 0:
                return
            time.sleep(0.5)
        raise AssertionError(f"Prometheus still sees errors of {model} v{version}")


@pytest.fixture(scope="module")
def stack(base_env: dict[str, str], log_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CanaryStack]:
    exporter, receiver = Exporter(), Receiver()
    prometheus = Prometheus(tmp_path_factory.mktemp("prometheus"), log_dir).start()
    prometheus.set_targets("predictor", [exporter.target])
    with p.postgres_database("mlops_test_registry_canary") as db_url:
        env = {**base_env, "REGISTRY_DATABASE_URL": db_url, "PROMETHEUS_URL": prometheus.url,
               "NOTIFY_WEBHOOK_URL": receiver.url, "CANARY_TICK_SECONDS": "0.5", "CANARY_MIN_WINDOW_SECONDS": "5"}
        s = CanaryStack(prometheus, exporter, receiver, env, log_dir)
        s.start()
        try:
            yield s
        finally:
            s.stop()
            prometheus.stop()
            exporter.close()
            receiver.close()


@pytest.fixture()
def api(stack: CanaryStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, timeout=60) as client:
        yield client


@pytest.fixture()
def in_production(api: httpx.Client, register: Callable[..., str], model_name: str, stack: CanaryStack) -> str:
    """A model with version 1 in production, healthy in Prometheus."""
    v1 = register(model_name)
    api.post(f"/models/{model_name}/promote", json={"version": v1}, headers=ADMIN).raise_for_status()
    stack.exporter.set(model_name, v1)
    return v1


def wait_status(api: httpx.Client, model: str, statuses: set[str], timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = api.get(f"/models/{model}/canary").json()
        if body.get("status") in statuses:
            return body
        time.sleep(0.3)
    raise AssertionError(f"canary never reached {statuses}: {body}")


def test_a_healthy_canary_walks_its_steps_and_promotes(api: httpx.Client, register: Callable[..., str],
                                                       model_name: str, in_production: str, stack: CanaryStack,
                                                       mlflow_client: MlflowClient) -> None:
    v2 = register(model_name)
    stack.exporter.set(model_name, v2, error_ratio=0.01, latency_seconds=0.03)
    stack.has_data(model_name, v2)
    r = api.post(f"/models/{model_name}/canary", json={"version": v2, "steps": [10, 50, 100], "interval": "2s"},
                 headers=ADMIN)
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "running" and r.json()["weight"] == 10
    assert api.get(f"/models/{model_name}/rollout").json() == {
        "model_name": model_name, "production": in_production, "canary": {"version": v2, "weight": 10},
        "shadow": None, "status": "running"}
    assert aliases(mlflow_client, model_name)["canary"] == v2

    done = wait_status(api, model_name, {"promoted", "rolled_back", "paused"})
    assert done["status"] == "promoted", done
    assert [c["weight"] for c in done["checks"]] == [10, 50, 100]
    for step in done["checks"]:
        assert step["passed"]
        by_name = {c["name"]: c for c in step["checks"]}
        assert by_name["error_ratio"]["scope"] == "version"
        assert by_name["error_ratio"]["value"] == pytest.approx(0.01, abs=0.005)
        assert by_name["p99_seconds"]["value"] <= 0.05
    assert aliases(mlflow_client, model_name) == {"production": v2, "previous": in_production}
    assert api.get(f"/models/{model_name}/rollout").json()["canary"] is None
    promote = api.get("/audit", params={"model": model_name, "action": "promote"}).json()["items"][0]
    assert promote["actor"] == "canary" and promote["on_behalf_of"] == "admin"
    assert promote["details"]["via"] == "canary" and promote["to_version"] == v2


def test_an_unhealthy_canary_rolls_back_on_its_own(api: httpx.Client, register: Callable[..., str],
                                                   model_name: str, in_production: str, stack: CanaryStack,
                                                   mlflow_client: MlflowClient) -> None:
    v2 = register(model_name)
    stack.exporter.set(model_name, v2, error_ratio=0.3)
    stack.has_data(model_name, v2)
    r = api.post(f"/models/{model_name}/canary", json={"version": v2, "steps": [25, 100], "interval": "2s"},
                 headers=ADMIN)
    assert r.status_code == 201, r.text

    done = wait_status(api, model_name, {"promoted", "rolled_back", "paused"})
    assert done["status"] == "rolled_back", done
    assert "error_ratio" in done["reason"]
    (step,) = done["checks"]
    assert step["weight"] == 25 and not step["passed"]
    assert aliases(mlflow_client, model_name) == {"production": in_production}  # the canary alias is gone
    assert api.get(f"/models/{model_name}/rollout").json()["canary"] is None

    rollback = api.get("/audit", params={"model": model_name, "action": "rollback"}).json()["items"][0]
    assert rollback["actor"] == "canary" and rollback["from_version"] == v2
    assert rollback["to_version"] == in_production and rollback["details"]["via"] == "canary"
    dora = api.get(f"/models/{model_name}/dora").json()
    assert dora["rollbacks"] == 1 and dora["deployments"] == 1
    assert dora["change_failure_ratio"] == pytest.approx(0.5)
    assert 1 < dora["time_to_restore_seconds"] < 60
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        events = [n["body"]["event"] for n in stack.receiver.for_model(model_name)]
        if "rollback" in events:
            break
        time.sleep(0.2)
    assert "rollback" in events and "canary_started" in events


def test_refusals(api: httpx.Client, register: Callable[..., str], model_name: str, in_production: str,
                  stack: CanaryStack) -> None:
    v2 = register(model_name)
    bad = register(model_name, tags={"mlops.validation": "failed"})
    start = f"/models/{model_name}/canary"
    body = {"version": v2, "interval": "1h"}
    assert api.post(start, json=body).status_code == 401
    for role in ("viewer", "scientist"):
        _, token = principal_token(stack.url, role)
        assert api.post(start, json=body, headers=bearer(token)).status_code == 403
        assert api.get(f"/models/{model_name}/rollout", headers=bearer(token)).status_code == 200
    assert api.post("/models/no-such-model-here/canary", json=body, headers=ADMIN).status_code == 404
    assert api.post(start, json={**body, "version": "999"}, headers=ADMIN).status_code == 404
    assert api.get("/models/no-such-model-here/canary").status_code == 404
    assert api.get(f"/models/{model_name}/canary").status_code == 404  # no canary yet
    wrongs: list[dict[str, Any]] = [{"steps": [50, 25, 100]}, {"steps": [10, 50]}, {"steps": [0, 100]}, {"steps": []},
              {"interval": "soon"}, {"interval": "0.5s"}, {"interval": "2d"}, {"version": "x"}]
    for wrong in wrongs:
        r = api.post(start, json={**body, **wrong}, headers=ADMIN)
        assert r.status_code == 422, (wrong, r.text)
    assert api.post(start, json={**body, "version": bad}, headers=ADMIN).status_code == 409
    assert api.post(start, json={**body, "version": in_production}, headers=ADMIN).status_code == 409
    assert api.post(f"/models/{model_name}/canary/resume", headers=ADMIN).status_code == 409  # none under way

    _, approver = principal_token(stack.url, "approver")
    assert api.post(start, json=body, headers=bearer(approver)).status_code == 201
    again = api.post(start, json={**body, "version": register(model_name)}, headers=ADMIN)
    assert again.status_code == 409 and "abort it first" in again.json()["detail"]
    assert api.post(f"/models/{model_name}/canary/resume", headers=ADMIN).status_code == 409  # it is running
    paused = api.post(f"/models/{model_name}/canary/pause", json={"reason": "lunch"}, headers=ADMIN).json()
    assert paused["status"] == "paused" and paused["reason"] == "lunch"
    assert api.get(f"/models/{model_name}/rollout").json()["canary"] == {"version": v2, "weight": 5}
    assert api.post(f"/models/{model_name}/canary/approve", headers=ADMIN).status_code == 409
    aborted = api.post(f"/models/{model_name}/canary/abort", headers=ADMIN).json()
    assert aborted["status"] == "rolled_back" and aborted["weight"] == 0
    assert api.get(f"/models/{model_name}/dora").json()["rollbacks"] == 0  # an abort is no failed change


def test_prometheus_down_pauses_and_a_restart_resumes(api: httpx.Client, register: Callable[..., str],
                                                      model_name: str, in_production: str, stack: CanaryStack,
                                                      mlflow_client: MlflowClient) -> None:
    v2 = register(model_name)
    stack.exporter.set(model_name, v2)
    stack.has_data(model_name, v2)
    stack.restart(PROMETHEUS_URL=f"http://127.0.0.1:{p.free_port()}")
    try:
        r = api.post(f"/models/{model_name}/canary",
                     json={"version": v2, "steps": [20, 100], "interval": "1s", "require_approval": True},
                     headers=ADMIN)
        assert r.status_code == 201, r.text
        paused = wait_status(api, model_name, {"paused", "promoted", "rolled_back"})
        assert paused["status"] == "paused" and "Prometheus" in paused["reason"], paused
        assert paused["checks"] == [] and aliases(mlflow_client, model_name)["production"] == in_production
    finally:
        stack.restart()
    assert api.post(f"/models/{model_name}/canary/resume", headers=ADMIN).json()["status"] == "running"
    # A restart mid-canary: the new process picks the canary up where Postgres says it is.
    stack.restart()
    waiting = wait_status(api, model_name, {"awaiting_approval", "rolled_back", "paused"})
    assert waiting["status"] == "awaiting_approval", waiting
    assert [c["weight"] for c in waiting["checks"]] == [20, 100]
    assert aliases(mlflow_client, model_name)["production"] == in_production
    approved = api.post(f"/models/{model_name}/canary/approve", json={"reason": "looks good"}, headers=ADMIN)
    assert approved.status_code == 200 and approved.json()["status"] == "promoted", approved.text
    assert aliases(mlflow_client, model_name)["production"] == v2


def rollout_tag(mlflow_client: MlflowClient, model: str) -> dict[str, Any] | None:
    raw = (mlflow_client.get_registered_model(model).tags or {}).get("mlops.rollout")
    return None if raw is None else json.loads(raw)


def rollout_events(tap: EventTap, model: str) -> list[dict[str, Any]]:
    return [e for e in tap.events if e["model"] == model and e["alias"] == "rollout"]


def test_the_split_follows_a_canary_to_rollback_and_to_promotion(
        api: httpx.Client, register: Callable[..., str], model_name: str, in_production: str, stack: CanaryStack,
        mlflow_client: MlflowClient, event_tap: EventTap) -> None:
    v2, v3 = register(model_name), register(model_name)
    # A shadow runs first: the canary's changes keep it in the split.
    shadow = api.post(f"/models/{model_name}/shadow", json={"version": v3, "share": 40}, headers=ADMIN)
    assert shadow.status_code == 201, shadow.text
    assert rollout_tag(mlflow_client, model_name) == {"canary": None, "shadow": {"version": v3, "share": 40}}
    stack.exporter.set(model_name, v2, error_ratio=0.4)
    stack.has_data(model_name, v2)
    r = api.post(f"/models/{model_name}/canary", json={"version": v2, "steps": [30, 100], "interval": "2s"},
                 headers=ADMIN)
    assert r.status_code == 201, r.text
    assert rollout_tag(mlflow_client, model_name) == {"canary": {"version": v2, "weight": 30},
                                                      "shadow": {"version": v3, "share": 40}}
    assert api.get(f"/models/{model_name}/rollout").json()["shadow"] == {"version": v3, "share": 40}
    assert wait_status(api, model_name, {"rolled_back", "promoted", "paused"})["status"] == "rolled_back"
    assert rollout_tag(mlflow_client, model_name) == {"canary": None, "shadow": {"version": v3, "share": 40}}
    event_tap.wait_for(lambda _: len(rollout_events(event_tap, model_name)) >= 3)
    assert [e["action"] for e in rollout_events(event_tap, model_name)] == ["rollout"] * 3
    assert [e["version"] for e in rollout_events(event_tap, model_name)] == [v3, v2, v3]

    # The second canary passes and is promoted: the tag walks its weights and ends without a canary.
    stack.exporter.set(model_name, v2)
    api.delete(f"/models/{model_name}/shadow", headers=ADMIN).raise_for_status()
    stack.no_errors_in_window(model_name, v2)
    assert rollout_tag(mlflow_client, model_name) == {"canary": None, "shadow": None}
    seen: list[dict[str, Any] | None] = []
    r = api.post(f"/models/{model_name}/canary", json={"version": v2, "steps": [50, 100], "interval": "2s"},
                 headers=ADMIN)
    assert r.status_code == 201, r.text
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        tag = rollout_tag(mlflow_client, model_name)
        if not seen or seen[-1] != tag:
            seen.append(tag)
        if api.get(f"/models/{model_name}/canary").json()["status"] in {"promoted", "rolled_back", "paused"}:
            break
        time.sleep(0.2)
    assert api.get(f"/models/{model_name}/canary").json()["status"] == "promoted"
    seen.append(rollout_tag(mlflow_client, model_name))
    weights = [t["canary"]["weight"] for t in seen if t and t["canary"]]
    assert weights[0] == 50 and weights == sorted(weights) and set(weights) <= {50, 100}
    assert seen[-1] == {"canary": None, "shadow": None}
    assert aliases(mlflow_client, model_name)["production"] == v2
    event_tap.wait_for(lambda _: rollout_events(event_tap, model_name)[-1]["version"] is None)


def test_a_predictor_without_version_labels_is_judged_by_its_model_series(
        api: httpx.Client, register: Callable[..., str], model_name: str, in_production: str,
        stack: CanaryStack) -> None:
    v2 = register(model_name)
    stack.exporter.set(model_name, in_production, error_ratio=0.2, per_version=False)
    stack.has_data(model_name, None)
    r = api.post(f"/models/{model_name}/canary", json={"version": v2, "steps": [100], "interval": "2s"},
                 headers=ADMIN)
    assert r.status_code == 201, r.text
    done = wait_status(api, model_name, {"rolled_back", "promoted", "paused"})
    assert done["status"] == "rolled_back", done
    by_name = {c["name"]: c for c in done["checks"][0]["checks"]}
    assert by_name["error_ratio"]["scope"] == "model"
    assert by_name["error_ratio"]["value"] == pytest.approx(0.2, abs=0.05)
    assert by_name["quality_drop"]["scope"] == "none"


def wait_shadow(api: httpx.Client, model: str, done: Callable[[dict[str, Any]], bool],
                timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = api.get(f"/models/{model}/shadow").json()
        if body.get("evidence") and done(body):
            return body
        time.sleep(0.5)
    raise AssertionError(f"the shadow never got there: {body}")


def test_policy_defaults_and_the_shadow_period_it_requires(
        api: httpx.Client, register: Callable[..., str], model_name: str, in_production: str, stack: CanaryStack,
        mlflow_client: MlflowClient) -> None:
    v2 = register(model_name)
    stack.exporter.set(model_name, v2)
    policy = {**POLICY, "reason": "rollout rules",
              "canary": {"steps": [50, 100], "interval": "1s", "max_error_ratio": 0.5, "require_approval": True},
              "shadow": {"min_requests": 300, "min_seconds": 2, "min_agreement": 0.9}}
    put = api.put(f"/models/{model_name}/policy", json=policy, headers=ADMIN)
    assert put.status_code == 200, put.text
    assert put.json()["canary"]["steps"] == [50, 100] and put.json()["shadow"]["min_requests"] == 300
    # A revision that leaves the blocks out keeps them; one that sets null removes one.
    kept = api.put(f"/models/{model_name}/policy", json={**POLICY, "margin": 0.01, "reason": "margin"},
                   headers=ADMIN).json()
    assert kept["canary"] == put.json()["canary"] and kept["shadow"] == put.json()["shadow"]
    bad = api.put(f"/models/{model_name}/policy", json={**policy, "canary": {"steps": [50, 20]}}, headers=ADMIN)
    assert bad.status_code == 422

    start = f"/models/{model_name}/canary"
    never = api.post(start, json={"version": v2}, headers=ADMIN)
    assert never.status_code == 409 and "never ran in shadow" in never.json()["detail"]
    promote = api.post(f"/models/{model_name}/promote", json={"version": v2}, headers=ADMIN)
    assert promote.status_code == 409 and "never ran in shadow" in promote.json()["detail"]

    assert api.post(f"/models/{model_name}/shadow", json={"version": v2, "share": 50}, headers=ADMIN).status_code == 201
    early = api.post(start, json={"version": v2}, headers=ADMIN)
    assert early.status_code == 409 and "of 300 requests" in early.json()["detail"], early.text
    assert early.json()["detail"].startswith("cannot start a canary: shadow period: ")

    # The shadow disagrees with production too often.
    stack.exporter.shadow(model_name, v2, agreement=0.5)
    body = wait_shadow(api, model_name, lambda b: b["evidence"]["compared"] >= 300 and b["evidence"]["seconds"] >= 2)
    assert body["evidence"]["agreement"] == pytest.approx(0.5, abs=0.02)
    assert body["evidence"]["agreement_per_class"] == {"ham": pytest.approx(0.5, abs=0.02),
                                                       "spam": pytest.approx(0.5, abs=0.02)}
    assert body["evidence"]["p99_seconds"] <= 0.025 and body["evidence"]["errors"] == 0
    assert any("agreement with production 0.5" in m for m in body["missing"]), body["missing"]
    refused = api.post(start, json={"version": v2}, headers=ADMIN)
    assert refused.status_code == 409 and "agreement with production 0.5" in refused.json()["detail"]

    # A new shadow period of the same version, now agreeing, but worse on live accuracy than production.
    api.delete(f"/models/{model_name}/shadow", headers=ADMIN).raise_for_status()
    stack.exporter.shadow(model_name, v2, agreement=0.96)
    stack.exporter.live_accuracy(model_name, in_production, 0.9)
    stack.exporter.live_accuracy(model_name, v2, 0.8)
    assert api.post(f"/models/{model_name}/shadow", json={"version": v2, "share": 50}, headers=ADMIN).status_code == 201
    body = wait_shadow(api, model_name, lambda b: b["evidence"]["compared"] >= 300 and b["evidence"]["seconds"] >= 2)
    assert body["evidence"]["agreement"] == pytest.approx(0.96, abs=0.02)
    assert body["evidence"]["live_quality"] == {"metric": "accuracy", "higher_is_better": True, "shadow": 0.8,
                                                "production": 0.9}
    assert body["missing"] == ["live accuracy 0.8 worse than production's 0.9"]
    assert api.post(start, json={"version": v2}, headers=ADMIN).status_code == 409

    stack.exporter.live_accuracy(model_name, v2, 0.92)
    wait_shadow(api, model_name, lambda b: b["missing"] == [])
    r = api.post(start, json={"version": v2}, headers=ADMIN)
    assert r.status_code == 201, r.text
    canary = r.json()
    assert canary["steps"] == [50, 100] and canary["interval"] == "1s" and canary["require_approval"] is True
    assert canary["thresholds"]["max_error_ratio"] == 0.5
    assert canary["thresholds"]["max_p99_seconds"] == 1.0  # not in the policy: the setting
    waiting = wait_status(api, model_name, {"awaiting_approval", "rolled_back", "paused"})
    assert waiting["status"] == "awaiting_approval", waiting
    approved = api.post(f"/models/{model_name}/canary/approve", headers=ADMIN)
    assert approved.status_code == 200 and approved.json()["status"] == "promoted", approved.text
    shadow = api.get(f"/models/{model_name}/shadow").json()
    assert shadow["status"] == "promoted" and shadow["ended_by"] == "admin"
    assert rollout_tag(mlflow_client, model_name) == {"canary": None, "shadow": None}


def test_shadow_refusals_and_audit(api: httpx.Client, register: Callable[..., str], model_name: str,
                                   in_production: str, stack: CanaryStack) -> None:
    v2, v3 = register(model_name), register(model_name)
    bad = register(model_name, tags={"mlops.validation": "failed"})
    path = f"/models/{model_name}/shadow"
    body = {"version": v2, "share": 10, "reason": "see how it does"}
    assert api.get(path).status_code == 404  # never had one
    assert api.post(path, json=body).status_code == 401
    for role in ("viewer", "scientist"):
        _, token = principal_token(stack.url, role)
        assert api.post(path, json=body, headers=bearer(token)).status_code == 403
        assert api.delete(path, headers=bearer(token)).status_code == 403
    unknown = api.post("/models/no-such-model-here/shadow", json=body, headers=ADMIN)
    assert unknown.status_code == 404 and "no-such-model-here" in unknown.json()["detail"]
    assert api.get("/models/no-such-model-here/shadow").status_code == 404
    assert api.post(path, json={**body, "version": "999"}, headers=ADMIN).status_code == 404
    for wrong in ({"share": 0}, {"share": 101}, {"version": "x"}, {"extra": 1}):
        assert api.post(path, json={**body, **wrong}, headers=ADMIN).status_code == 422, wrong
    failed = api.post(path, json={**body, "version": bad}, headers=ADMIN)
    assert failed.status_code == 409 and "failed validation" in failed.json()["detail"]
    assert api.post(path, json={**body, "version": in_production}, headers=ADMIN).status_code == 409
    assert api.delete(path, headers=ADMIN).status_code == 409  # nothing running

    _, approver = principal_token(stack.url, "approver")
    started = api.post(path, json=body, headers=bearer(approver))
    assert started.status_code == 201 and started.json()["status"] == "running" and started.json()["share"] == 10
    other = api.post(path, json={**body, "version": v3}, headers=ADMIN)
    assert other.status_code == 409 and "DELETE" in other.json()["detail"]
    view = api.get(path).json()
    assert view["version"] == v2 and view["evidence"]["compared"] == 0 and view["policy"] is None
    stopped = api.request("DELETE", path, json={"reason": "enough"}, headers=ADMIN).json()
    assert stopped["status"] == "stopped" and stopped["end_reason"] == "enough"
    actions = [a["action"] for a in api.get("/audit", params={"model": model_name}).json()["items"]]
    assert actions[:2] == ["shadow.stop", "shadow.start"]


def test_the_gate_puts_a_passing_challenger_in_shadow(api: httpx.Client, model_name: str, stack: CanaryStack,
                                                      mlflow_client: MlflowClient, tiny_model_id: str) -> None:
    jobs = Jobs(mlflow_client, tiny_model_id)
    first = api.post(f"/models/{model_name}/gate", json=jobs.report(0.85), headers=SERVICE).json()
    assert first["outcome"] == "promoted"  # no production yet: nothing to compare with
    v1 = first["version"]
    stack.exporter.set(model_name, v1)
    api.put(f"/models/{model_name}/policy", headers=ADMIN, json={
        **POLICY, "reason": "shadow first", "shadow": {"auto": True, "share": 30, "min_requests": 200}}
    ).raise_for_status()
    answer = api.post(f"/models/{model_name}/gate", headers=SERVICE,
                      json=jobs.report(0.95, production_version=v1, production_score=0.85)).json()
    assert answer["outcome"] == "pending_approval" and "shadow" in answer["reason"], answer
    v2, decision = answer["version"], answer["decision_id"]
    shadow = api.get(f"/models/{model_name}/shadow").json()
    assert shadow["version"] == v2 and shadow["share"] == 30 and shadow["started_by"] == "trainer"
    assert api.get(f"/decisions/{decision}").json()["evidence"]["shadow"]["id"] == shadow["id"]
    assert aliases(mlflow_client, model_name)["production"] == v1

    early = api.post(f"/decisions/{decision}/approve", json={"comment": "now"}, headers=ADMIN)
    assert early.status_code == 409 and "of 200 requests" in early.json()["detail"], early.text
    stack.exporter.shadow(model_name, v2)
    wait_shadow(api, model_name, lambda b: b["missing"] == [])
    approved = api.post(f"/decisions/{decision}/approve", json={"comment": "shadow looks fine"}, headers=ADMIN)
    assert approved.status_code == 200, approved.text
    assert aliases(mlflow_client, model_name)["production"] == v2
    assert api.get(f"/models/{model_name}/shadow").json()["status"] == "promoted"
    assert rollout_tag(mlflow_client, model_name) == {"canary": None, "shadow": None}


def test_the_page_shows_the_rollout_and_a_click_pauses_the_canary(
        api: httpx.Client, register: Callable[..., str], model_name: str, in_production: str,
        stack: CanaryStack) -> None:
    v2, v3 = register(model_name), register(model_name)
    stack.exporter.shadow(model_name, v3, agreement=0.9)
    api.post(f"/models/{model_name}/shadow", json={"version": v3, "share": 20}, headers=ADMIN).raise_for_status()
    api.post(f"/models/{model_name}/canary", json={"version": v2, "steps": [10, 100], "interval": "1h"},
             headers=ADMIN).raise_for_status()
    wait_shadow(api, model_name, lambda b: b["evidence"]["compared"] > 0)
    html = api.get("/ui").text
    section = html[html.index(f'data-model="{model_name}"'):]
    section = section[:section.index("</section>")]
    assert 'class="canary-status">running<' in section and 'class="canary-weight">10<' in section
    assert f'data-canary="pause" data-model="{model_name}"' in section
    assert 'data-canary="approve"' not in section  # only once it awaits approval
    assert f"<strong>Shadow</strong> v{v3}: running, 20% of requests mirrored" in section
    assert 'class="agreement">90.0%<' in section

    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(f"{stack.url}/ui")
            page.fill("#token", ADMIN_TOKEN)
            page.locator(f'section[data-model="{model_name}"] button[data-canary="pause"]').click()
            page.wait_for_selector(f'section[data-model="{model_name}"] .canary[data-status="paused"]', timeout=30000)
            page.locator(f'section[data-model="{model_name}"] button[data-canary="abort"]').click()
            page.wait_for_selector(f'section[data-model="{model_name}"] .canary[data-status="rolled_back"]',
                                   timeout=30000)
        finally:
            browser.close()
    audit = api.get("/audit", params={"model": model_name}).json()["items"]
    assert [(a["action"], a["actor"]) for a in audit[:2]] == [("canary.abort", "admin"), ("canary.pause", "admin")]
