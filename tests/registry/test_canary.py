"""Canary rollouts against a real registry-proxy, MLflow, Postgres and Prometheus.

Prometheus scrapes a tiny exporter the tests control: it serves the predictor's HTTP metric names with
``model_name`` and ``model_version`` labels, and each scrape adds the requests, errors and latencies the test
set for a version, so the rates Prometheus computes are the ones the test chose."""

from __future__ import annotations

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
from tests.registry.helpers import ADMIN, Receiver, aliases
from tests.support import processes as p
from tests.support.auth import bearer, principal_token

pytestmark = pytest.mark.skipif(prov.PROMETHEUS is None, reason=prov.NO_PROMETHEUS)

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
REQUESTS_PER_SCRAPE = 100


@dataclass
class Health:
    error_ratio: float = 0.0
    latency_seconds: float = 0.02
    ok: float = 0.0
    errors: float = 0.0
    buckets: list[float] = field(default_factory=lambda: [0.0] * (len(BUCKETS) + 1))
    latency_sum: float = 0.0


class Exporter:
    """/metrics with the predictor's HTTP series per (model, version); counters grow on every scrape."""

    def __init__(self) -> None:
        self.versions: dict[tuple[str, str], Health] = {}
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

    def set(self, model: str, version: str, error_ratio: float = 0.0, latency_seconds: float = 0.02) -> None:
        with self.lock:
            health = self.versions.setdefault((model, version), Health())
            health.error_ratio, health.latency_seconds = error_ratio, latency_seconds

    def scrape(self) -> str:
        lines = ["# TYPE predictor_http_requests_total counter",
                 "# TYPE predictor_http_request_duration_seconds histogram"]
        with self.lock:
            for (model, version), h in self.versions.items():
                errors = REQUESTS_PER_SCRAPE * h.error_ratio
                h.errors += errors
                h.ok += REQUESTS_PER_SCRAPE - errors
                for i, le in enumerate(BUCKETS):
                    if h.latency_seconds <= le:
                        h.buckets[i] += REQUESTS_PER_SCRAPE
                h.buckets[-1] += REQUESTS_PER_SCRAPE
                h.latency_sum += REQUESTS_PER_SCRAPE * h.latency_seconds
                labels = f'model_name="{model}",model_version="{version}",handler="/predict",method="POST"'
                lines.append(f'predictor_http_requests_total{{{labels},status="2xx"}} {h.ok}')
                lines.append(f'predictor_http_requests_total{{{labels},status="5xx"}} {h.errors}')
                for bound, count in zip([*map(str, BUCKETS), "+Inf"], h.buckets, strict=True):
                    lines.append(f'predictor_http_request_duration_seconds_bucket{{{labels},le="{bound}"}} {count}')
                lines.append(f"predictor_http_request_duration_seconds_count{{{labels}}} {h.buckets[-1]}")
                lines.append(f"predictor_http_request_duration_seconds_sum{{{labels}}} {h.latency_sum}")
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

    def has_data(self, model: str, version: str, timeout: float = 30) -> None:
        query = f'sum(rate(predictor_http_requests_total{{model_name="{model}",model_version="{version}"}}[5s]))'
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = httpx.get(f"{self.prometheus.url}/api/v1/query", params={"query": query}, timeout=5).json()
            if r["data"]["result"]:
                return
            time.sleep(0.5)
        raise AssertionError(f"Prometheus never had {model} v{version}")


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
        "status": "running"}
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
