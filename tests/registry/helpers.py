"""Plain helpers shared by the registry-proxy tests."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import redis
from mlflow.tracking import MlflowClient

from tests.support.auth import ADMIN, SERVICE_TOKEN, bearer

__all__ = ["ADMIN", "SERVICE", "POLICY", "EventTap", "Jobs", "OwnRegistry", "Receiver", "aliases", "gate_body"]

# The trainer service's token: the only one the gate accepts.
SERVICE = bearer(SERVICE_TOKEN)
EXPERIMENT = "registry-proxy-tests"
# The metric block of the spec the tests' jobs "trained with": it seeds the policy of their (spec-less) models.
POLICY = {"metric": "f1_macro", "higher_is_better": True, "threshold": 0.8, "margin": 0.0}
DIGEST = "sha256:" + "ab" * 32


def aliases(mlflow_client: MlflowClient, name: str) -> dict[str, str]:
    return {k: str(v) for k, v in (mlflow_client.get_registered_model(name).aliases or {}).items()}


def gate_body(run_id: str, model_uri: str, challenger_score: float = 0.9, production_version: str | None = None,
              production_score: float | None = None, **extra: Any) -> dict[str, Any]:
    """A trainer's gate report (``mlops_common.contracts.GateRequest``): scores, never an outcome to trust."""
    body: dict[str, Any] = {
        "job_id": uuid.uuid4().hex, "run_id": run_id, "model_uri": model_uri,
        "challenger_metrics": {"f1_macro": challenger_score},
        "production_version": production_version,
        "production_metrics": None if production_score is None else {"f1_macro": production_score},
        "spec_policy": POLICY, "dataset_digest": DIGEST, "requested_at": "2026-01-01T00:00:00+00:00",
    }
    body.update(extra)
    return body


@dataclass
class Jobs:
    """Stands in for the trainer's jobs: each report gets a fresh run (holding its metrics, as a job's run does)
    and points at the tiny logged model, which registry-proxy registers as a new version of the model."""

    mlflow_client: MlflowClient
    model_id: str

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model_id}"

    def run(self, **metrics: float) -> str:
        experiment = self.mlflow_client.get_experiment_by_name(EXPERIMENT)
        assert experiment is not None
        run_id = self.mlflow_client.create_run(experiment.experiment_id).info.run_id
        for key, value in metrics.items():
            self.mlflow_client.log_metric(run_id, key, value)
        self.mlflow_client.set_terminated(run_id)
        return run_id

    def report(self, challenger_score: float = 0.9, production_version: str | None = None,
               production_score: float | None = None, **extra: Any) -> dict[str, Any]:
        return gate_body(self.run(f1_macro=challenger_score), self.model_uri, challenger_score, production_version,
                         production_score, **extra)


class EventTap:
    """Collects the alias events published on a Redis channel in a background thread."""

    def __init__(self, redis_url: str, channel: str) -> None:
        self.conn = redis.Redis.from_url(redis_url)
        self.pubsub = self.conn.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(channel)
        self.events: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self.pubsub.get_message(timeout=0.2)
            if message and message["type"] == "message":
                self.events.append(json.loads(message["data"]))

    def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 10) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.events):
                return self.events
            time.sleep(0.05)
        raise AssertionError(f"events never matched; got {self.events}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.pubsub.close()
        self.conn.close()


class Receiver:
    """A tiny webhook receiver that answers 500 to the next ``fail_next`` requests, then 200."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.failures_left = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with receiver.lock:
                    failing = receiver.failures_left > 0
                    receiver.failures_left -= 1 if failing else 0
                    receiver.requests.append({"body": body, "answered": 500 if failing else 200})
                self.send_response(500 if failing else 200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def for_model(self, model: str) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if r["body"].get("model") == model]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class OwnRegistry:
    url: str
    db_url: str
    receiver: Receiver
