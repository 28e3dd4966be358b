"""The gate of DESIGN.md as a pure function (``mlops_common.contracts.decide``, applied by registry-proxy with
the policy it owns): every branch, both metric directions, the margin; the trainer's preview applies the same
rules with the spec's metric; the report the trainer sends is a valid ``GateRequest`` with scores, never an
outcome to trust."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mlops_common.contracts import GatePolicy, GateRequest, decide
from mlops_common.spec import MetricSpec, ModelSpec
from trainer import gate
from trainer.tasks import gate_request

F1 = MetricSpec(name="f1_macro", higher_is_better=True, threshold=0.8, margin=0.01)
MAE = MetricSpec(name="mae", higher_is_better=False, threshold=2.0, margin=0.1)
SHA = "a" * 64
GOLDEN = "b" * 64


@pytest.mark.parametrize(("metric", "challenger", "production", "version", "outcome"), [
    (F1, 0.90, None, None, "promoted"),            # no production, meets the bar
    (F1, 0.70, None, None, "pending_approval"),    # no production, misses the bar
    (F1, 0.90, 0.85, "1", "promoted"),             # better by more than the margin and meets the bar
    (F1, 0.855, 0.85, "1", "kept"),                # better, but not by more than the margin
    (F1, 0.84, 0.85, "1", "kept"),                 # worse, production still meets the bar
    (F1, 0.79, 0.70, "1", "pending_approval"),     # better but under the bar, production under it too
    (F1, 0.60, 0.70, "1", "pending_approval"),     # neither meets the bar
    (F1, 0.90, None, "1", "pending_approval"),     # production could not be evaluated: a human decides
    (MAE, 1.0, 1.5, "3", "promoted"),              # lower is better
    (MAE, 1.45, 1.5, "3", "kept"),                 # within the margin
    (MAE, 2.5, 3.0, "3", "pending_approval"),      # both above the MAE bar
    (MetricSpec(name="mae", higher_is_better=False), 9.0, None, None, "promoted"),  # no threshold: any score meets
])
def test_gate(metric: MetricSpec, challenger: float, production: float | None, version: str | None,
              outcome: str) -> None:
    policy = GatePolicy(metric=metric.name, higher_is_better=metric.higher_is_better, threshold=metric.threshold,
                        margin=metric.margin)
    decided, reason = decide(policy, challenger, production, version)
    assert decided == outcome, reason
    assert metric.name in reason
    # The trainer's own reading (sent as trainer_outcome, never trusted) applies the same rules.
    assert gate.preview(metric, challenger, production, version) == (decided, reason)


def job_record(**fields: object) -> dict:
    record = {
        "job_id": "j1", "run_id": "r1", "model_uri": "models:/m-123", "created_at": "2026-01-01T00:00:00+00:00",
        "requested_by": "alice", "challenger_metrics": {"f1_macro": 0.9, "accuracy": 0.95},
        "production_version": "2", "production_metrics": {"f1_macro": 0.85, "accuracy": 0.93},
        "dataset": {"sha256": SHA}, "test_split": {"sha256": SHA, "rows": 80},
    }
    return {**record, **fields}


def spec() -> ModelSpec:
    return ModelSpec.model_validate({"name": "m", "task": "text-classification", "metric": F1.model_dump(),
                                     "data": {"uri": "x", "text_column": "text", "label_column": "label"}})


def test_gate_request_carries_every_score_and_no_outcome_to_trust() -> None:
    request = gate_request(job_record(golden_sha256=GOLDEN, challenger_golden={"f1_macro": 0.8, "accuracy": 0.9},
                                      production_golden=None, production_golden_error="KeyError: 'text'"), spec())
    body = request.model_dump(mode="json")
    assert GateRequest.model_validate(body) == request
    assert body["model_uri"] == "models:/m-123" and body["requested_by"] == "alice"
    assert body["challenger_metrics"] == {"f1_macro": 0.9, "accuracy": 0.95}
    assert body["production_version"] == "2" and body["production_metrics"]["f1_macro"] == 0.85
    assert body["test_split_sha256"] == SHA and body["test_split_rows"] == 80 and body["dataset_digest"] == SHA
    assert body["golden"] == {"sha256": GOLDEN, "challenger": {"f1_macro": 0.8, "accuracy": 0.9},
                              "production": None, "error": "production: KeyError: 'text'"}
    assert body["trainer_outcome"] == "promoted"  # informational only
    # The spec's metric block, which only seeds the policy of a model registry-proxy never gated.
    assert body["spec_policy"] == {"metric": "f1_macro", "higher_is_better": True, "threshold": 0.8, "margin": 0.01}
    assert "outcome" not in body and "version" not in body


def test_gate_request_without_golden_set_or_production() -> None:
    body = gate_request(job_record(production_version=None, production_metrics=None, requested_by=None,
                                   challenger_metrics={"f1_macro": 0.5, "accuracy": math.nan}), spec()
                        ).model_dump(mode="json")
    assert body["golden"] is None and body["production_version"] is None and body["requested_by"] is None
    assert body["challenger_metrics"] == {"f1_macro": 0.5}  # a metric undefined on the split is left out
    assert body["trainer_outcome"] == "pending_approval"


@pytest.fixture()
def registry() -> Iterator[tuple[str, dict]]:
    """A stand-in for registry-proxy's golden-set and gate endpoints on a real local HTTP server."""
    state: dict = {"golden": None, "status": 200, "seen": []}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def answer(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802
            state["seen"].append(("GET", self.path, self.headers.get("Authorization")))
            if state["golden"] is None:
                self.answer(404, {"detail": "no golden set"})
            else:
                self.answer(200, state["golden"])

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            state["seen"].append(("POST", self.path, body))
            self.answer(state["status"], {"detail": "model_uri: not a model of this run"})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()


def test_golden_set_lookup(registry: tuple[str, dict]) -> None:
    url, state = registry
    assert gate.golden_set(url, "tok", "m") is None
    assert state["seen"][-1] == ("GET", "/models/m/golden-set", "Bearer tok")
    state["golden"] = {"model_name": "m", "sha256": GOLDEN, "status": "proposed", "set_by": "registry-proxy"}
    assert gate.golden_set(url, "tok", "m")["status"] == "proposed"
    state["golden"] = {"sha256": "not-a-sha", "status": "pinned"}
    with pytest.raises(gate.RegistryError, match="unreadable golden set") as err:
        gate.golden_set(url, "tok", "m")
    assert not err.value.transient
    with pytest.raises(gate.RegistryError, match="unreachable") as err:
        gate.golden_set("http://127.0.0.1:9", "tok", "m", timeout=2)
    assert err.value.transient


def test_gate_call_4xx_fails_at_once_with_the_servers_reason(registry: tuple[str, dict]) -> None:
    url, state = registry
    state["status"] = 422
    with pytest.raises(gate.RegistryError) as err:
        gate.call_registry(url, "tok", "m", {"job_id": "j1"})
    assert not err.value.transient
    assert str(err.value) == "registry-proxy refused the gate call (422): model_uri: not a model of this run"
    assert [s[0] for s in state["seen"]] == ["POST"]  # a 4xx is not retried
