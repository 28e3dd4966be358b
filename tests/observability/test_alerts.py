"""Each alert's query, read from the provisioning YAML, evaluated by a real Prometheus while the real stack
is driven into the alert's condition and out again: a stopped predictor, 503s before a model is approved,
paused processes (slow requests), shifted inputs, wrong feedback, a failed job, a pending decision.

Windows of 5 to 15 minutes are shortened to 10 s (``provisioning.compressed``) so crossing back takes
seconds; Grafana's ``for`` durations are not waited for (they are Grafana's, not the query's)."""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from tests.observability import provisioning as prov
from tests.observability.stack import DRIFT_WINDOW, FAST, SHIFTED, Stack, text_spec, unique
from tests.support import processes as p

pytestmark = pytest.mark.slow
RULES = {rule.uid: rule for rule in prov.alert_rules()}
WINDOW_SECONDS = 10


def evaluate(stack: Stack, uid: str) -> dict[str, tuple[dict[str, str], float]]:
    """The alert's query as Grafana's reduce step sees it: the last value of every series, by label set. In mode
    dropNN (every rule's) a NaN is no value at all: a ratio over a window without traffic (0/0) is neither above
    nor below a threshold, so a series is only there once its window holds traffic."""
    rule = RULES[uid]
    expr = prov.compressed(rule.expr, f"{WINDOW_SECONDS}s")
    values = {str(sorted(r["metric"].items())): (r["metric"], float(r["value"][1]))
              for r in stack.prometheus.query(expr)}
    if rule.reduce_mode == "dropNN":
        values = {key: (metric, value) for key, (metric, value) in values.items() if math.isfinite(value)}
    return values


def wait_alert(stack: Stack, uid: str, firing: bool, timeout: float = 60, **labels: str) -> float:
    """Waits until the series with ``labels`` crosses the alert's threshold (or is back under it)."""
    rule = RULES[uid]
    deadline = time.monotonic() + timeout
    seen: dict[str, tuple[dict[str, str], float]] = {}
    while time.monotonic() < deadline:
        seen = evaluate(stack, uid)
        for metric, value in seen.values():
            if all(metric.get(k) == v for k, v in labels.items()) and prov.crosses(rule, value) == firing:
                return value
        time.sleep(1)
    raise AssertionError(f"{uid}: no series {labels} {'crossing' if firing else 'back under'} "
                         f"{rule.op} {rule.threshold} within {timeout}s; last values: {list(seen.values())}")


@contextmanager
def traffic(url: str, clients: int, body: dict, pause: float = 0.0) -> Iterator[list[int]]:
    """Background clients posting ``body`` to ``url`` until the block ends; yields the status codes seen."""
    stop, statuses = threading.Event(), []

    def run() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                try:
                    statuses.append(client.post(url, json=body).status_code)
                except httpx.HTTPError:
                    statuses.append(0)
                if pause:
                    time.sleep(pause)

    threads = [threading.Thread(target=run, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    try:
        yield statuses
    finally:
        stop.set()
        for t in threads:
            t.join(30)


def test_predictor_down(stack: Stack) -> None:
    port = p.free_port()
    url = stack.start_predictor("replica", stack.models["text"], port=port)
    instance = url.split("://")[1]
    try:
        assert wait_alert(stack, "predictor-down", firing=False, instance=instance) == 1
        stack.predictors["replica"].stop()
        assert wait_alert(stack, "predictor-down", firing=True, instance=instance) == 0
        stack.start_predictor("replica", stack.models["text"], port=port)
        assert wait_alert(stack, "predictor-down", firing=False, instance=instance) == 1
    finally:
        stack.predictors.pop("replica").stop()
        stack.prometheus.set_targets("predictor", [t for t in stack.prometheus.targets["predictor"] if t != instance])


def test_error_ratio_pending_decision_and_no_production(stack: Stack) -> None:
    """A model nobody approved: its predictor answers 503 (5xx ratio crosses), a decision is pending, nothing
    is in production. Approving the decision brings all three back."""
    name = stack.models["pending"]
    url = f"{stack.urls['pending']}/predict"
    with traffic(url, clients=2, body={"instances": ["hello"]}, pause=0.05) as statuses:
        assert wait_alert(stack, "predictor-error-ratio", firing=True, model_name=name) == 1
        assert set(statuses) == {503}
    assert wait_alert(stack, "decision-pending", firing=True, model_name=name) >= 1
    assert wait_alert(stack, "no-production-model", firing=True, model_name=name) == 0

    decision = stack.pending_decision(name)
    stack.registry_post(f"/decisions/{decision['id']}/approve", {"comment": "observability test"})
    assert wait_alert(stack, "decision-pending", firing=False, model_name=name) == 0
    assert wait_alert(stack, "no-production-model", firing=False, model_name=name) >= 1
    stack.wait_served("pending", str(decision["version"]))
    with traffic(url, clients=2, body={"instances": ["hello"]}, pause=0.05) as statuses:
        # Back under the 1 % bar; the window may still hold a few of the 503s from before the approval.
        assert wait_alert(stack, "predictor-error-ratio", firing=False, timeout=WINDOW_SECONDS + 40,
                          model_name=name) < RULES["predictor-error-ratio"].threshold
    assert 200 in statuses


def test_latency_p99_above_slo(stack: Stack) -> None:
    """Requests caught inside a paused predictor take longer than the SLO; once it runs freely, p99 drops.

    The histogram is timed inside the process, so only requests in flight when it stops are slow: up to one
    per client each cycle. Short runs (150 ms) between pauses (600 ms) keep the fast ones few enough that the
    slow ones stay above 1 %, while every scrape (1 s timeout) still waits at most one pause to be answered,
    so the predictor's series never go missing."""
    proc = stack.predictors["text"]
    url = f"{stack.urls['text']}/predict"
    name = stack.models["text"]
    stop_pausing = threading.Event()

    def pause_repeatedly() -> None:
        while not stop_pausing.is_set():
            proc.signal(signal.SIGSTOP)
            time.sleep(0.6)
            proc.signal(signal.SIGCONT)
            time.sleep(0.15)

    with traffic(url, clients=10, body={"instances": ["Are we still meeting for lunch tomorrow?"] * 20}):
        pauser = threading.Thread(target=pause_repeatedly, daemon=True)
        pauser.start()
        try:
            value = wait_alert(stack, "predictor-latency-p99", firing=True, model_name=name)
        finally:
            stop_pausing.set()
            pauser.join(5)
            proc.signal(signal.SIGCONT)
        assert value > RULES["predictor-latency-p99"].threshold
        assert wait_alert(stack, "predictor-latency-p99", firing=False, timeout=WINDOW_SECONDS + 40,
                          model_name=name) < 0.5


def test_drift_above_threshold(stack: Stack) -> None:
    name = stack.models["text"]
    stack.text_traffic(SHIFTED, DRIFT_WINDOW + 10)
    assert wait_alert(stack, "model-drift", firing=True, model_name=name) > 1
    stack.text_traffic(stack.real_messages(DRIFT_WINDOW + 20, seed=7), DRIFT_WINDOW + 20)
    assert wait_alert(stack, "model-drift", firing=False, model_name=name) <= 1


def test_live_quality_below_threshold(stack: Stack) -> None:
    name = stack.models["text"]
    stack.labelled_feedback(correct=False)
    assert wait_alert(stack, "live-quality-low", firing=True, model_name=name) > 0
    stack.labelled_feedback(correct=True)
    assert wait_alert(stack, "live-quality-low", firing=False, model_name=name) <= 0


def test_retrain_job_failed(stack: Stack) -> None:
    name = unique("obs-fails")
    missing = stack.data_dir / f"{name}.csv"
    missing.write_text("text\nhello\nworld\n" * 20)
    job = stack.retrain(name, text_spec(missing, 0.5, FAST))
    assert job["status"] == "failed" and job["error"], job
    assert wait_alert(stack, "retrain-job-failed", firing=True, model_name=name) >= 1
    assert wait_alert(stack, "retrain-job-failed", firing=False, timeout=WINDOW_SECONDS + 40, model_name=name) == 0
