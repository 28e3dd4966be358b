"""The stack on seven hosts (network namespaces on one bridge, see tests/hosts/stack.py), driven from ``edge``.

The tests run in order on one stack and build on each other: the first retrain makes version 1, the second
(the one whose worker host dies) version 2, and the later ones move production between them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.hosts import network
from tests.hosts.stack import MODEL, POLL_SECONDS, Stack
from tests.support import jobs
from tests.support.auth import ADMIN
from tests.support.data import QUICK_CANDIDATES, sms_subset, text_spec
from tests.support.load import Load
from tests.support.registry import promote_through_registry, wait_served
from tests.support.waiting import wait_for

# The timeout covers building the stack too (it is set up by the first test): minutes on a busy machine.
pytestmark = [pytest.mark.hosts, pytest.mark.slow, pytest.mark.timeout(2400)]
SERVE_HOSTS = ("serve-1", "serve-2")
# A promotion reaches a predictor by its alias event, or at the latest by its next poll; loading the version
# comes on top, slow on a busy 2-core machine (the same allowance as the fault tests).
SWAP_BOUND = POLL_SECONDS + 45
# Every request waits this long for its answer: a busy shared machine can be slow, the assertions are elsewhere.
REQUEST_TIMEOUT = 60
# Slow enough that the worker is still training when it is killed.
# Slow enough to be killed mid-training on an idle machine too: 40 epochs of Word2vec over these 600 messages
# took 0.2 s there, and the whole job went by between two polls.
SLOW_CANDIDATES: list[dict[str, Any]] = [
    {"featurizer": {"type": "word2vec", "params": {"vector_size": 32, "epochs": 1500}},
     "estimator": {"type": "logreg", "params": {"max_iter": 300}}},
    {"featurizer": {"type": "tfidf"}, "estimator": {"type": "logreg", "params": {"max_iter": 300}}},
]


@dataclass
class LoadFrom(Load):
    """``Load`` whose client threads run on ``host``, so every request crosses the bridge from there."""

    host: network.Host | None = None

    def _loop(self) -> None:
        assert self.host is not None
        network.enter(self.host.ns)
        super()._loop()


@pytest.fixture(scope="module")
def dataset(stack: Stack) -> Path:
    return sms_subset(Path(stack.env["DATASETS_DIR"]) / "inputs" / "sms-hosts.csv", rows=600, seed=5)


def submit(stack: Stack, spec: dict[str, Any]) -> str:
    r = httpx.post(f"{stack.trainer}/retrain", json={"model_name": MODEL, "spec": spec}, headers=ADMIN,
                   timeout=REQUEST_TIMEOUT)
    assert r.status_code == 202, r.text
    return str(r.json()["job_id"])


def wait_job(stack: Stack, job_id: str, timeout: float = 900, stage_prefix: str | None = None) -> dict[str, Any]:
    """The job once it has finished (or reached a stage starting with ``stage_prefix``), asked from edge."""
    def state() -> dict[str, Any] | None:
        r = httpx.get(f"{stack.trainer}/jobs/{job_id}", headers=ADMIN, timeout=REQUEST_TIMEOUT)
        assert r.status_code == 200, r.text
        job: dict[str, Any] = r.json()
        done = job["status"] in jobs.FINISHED or (stage_prefix and str(job["stage"]).startswith(stage_prefix))
        return job if done else None
    return stack["edge"].run(wait_for, state, timeout, f"job {job_id} {stage_prefix or 'finished'}", 0.3)


def versions(stack: Stack) -> tuple[list[str], str | None]:
    """The model's versions and the one in production, as registry-proxy reports them (asked from edge)."""
    def ask() -> dict[str, Any]:
        r = httpx.get(f"{stack.registry}/models/{MODEL}", headers=ADMIN, timeout=REQUEST_TIMEOUT)
        assert r.status_code == 200, r.text
        return r.json()
    model = stack["edge"].run(ask)
    found = sorted(str(v["version"]) for v in model["versions"])
    production = next((str(v["version"]) for v in model["versions"] if "production" in v.get("aliases", [])), None)
    return found, production


def worker_log(stack: Stack, host: str) -> str:
    return stack.procs[f"{host}/worker"].log_path.read_text(errors="replace")


def both_serve(stack: Stack, version: str) -> float:
    """Seconds until both predictor hosts serve ``version`` (asked from edge), within the swap bound."""
    started = time.monotonic()
    for host in SERVE_HOSTS:
        stack["edge"].run(wait_served, stack.predictor(host), version, SWAP_BOUND)
    return time.monotonic() - started


def test_retrain_from_edge_runs_on_a_worker_host_and_registers_one_version(stack: Stack, dataset: Path) -> None:
    job = wait_job(stack, stack["edge"].run(submit, stack, text_spec(dataset, 0.5, QUICK_CANDIDATES)))
    assert job["status"] == "succeeded", job
    assert (str(job["model_version"]), job["decision"]) == ("1", "promoted"), job
    ran_on = [host for host in ("train-1", "train-2") if job["job_id"] in worker_log(stack, host)]
    assert ran_on, "neither worker host logged the job"
    assert versions(stack) == (["1"], "1")
    seconds = both_serve(stack, "1")
    print(f"job {job['job_id']} ran on {ran_on}; both predictor hosts served version 1 {seconds:.1f}s later")


def test_a_job_whose_worker_host_dies_completes_on_the_other_with_one_version(stack: Stack, dataset: Path) -> None:
    # train-2 stops taking jobs for a moment (as an operator drains a worker), so the job lands on train-1.
    stack.celery_control("--destination", "w@train-2", "cancel_consumer", stack.queue)
    try:
        job_id = stack["edge"].run(submit, stack, text_spec(dataset, 0.5, SLOW_CANDIDATES))
        job = wait_job(stack, job_id, stage_prefix="training candidates")
        assert job["status"] == "running", job  # killed in the middle of training
        assert job_id in worker_log(stack, "train-1")
        before_kill = len(worker_log(stack, "train-2"))
        stack.kill("train-1", "worker")
        killed_at = time.monotonic()
    finally:
        stack.celery_control("--destination", "w@train-2", "add_consumer", stack.queue)
    job = wait_job(stack, job_id)
    took = time.monotonic() - killed_at
    assert job["status"] == "succeeded", job
    assert str(job["model_version"]) == "2", job
    assert job_id in worker_log(stack, "train-2")[before_kill:], "train-2 never worked on the job"
    found, _ = versions(stack)
    assert found == ["1", "2"]
    print(f"train-1 killed mid-job; train-2 finished it {took:.1f}s later: version 2, {job['decision']}")
    stack.restart("train-1", "worker")


def test_a_promotion_reaches_both_predictor_hosts(stack: Stack) -> None:
    _, production = versions(stack)
    target = "1" if production == "2" else "2"
    stack["edge"].run(promote_through_registry, stack.registry, MODEL, target, "hosts test")
    seconds = both_serve(stack, target)
    print(f"version {target} promoted: served by both predictor hosts within {seconds:.1f}s")


def test_load_through_the_balancer_survives_a_predictor_host_dying(stack: Stack) -> None:
    with LoadFrom(stack.balancer, threads=3, host=stack["edge"]) as load:
        time.sleep(2)
        stack.kill("serve-1", "predictor")
        time.sleep(6)
    print(f"serve-1 killed under load: {load.sent} requests through the balancer, versions {sorted(load.versions)}")
    stack.restart("serve-1", "predictor")  # before the assertions: the next test needs both predictor hosts
    _, production = versions(stack)
    assert production is not None
    stack["edge"].run(wait_served, stack.predictor("serve-1"), production, 180)
    assert load.failures == []
    assert load.answered == load.sent > 30


def test_state_host_cut_off_for_five_seconds_is_survived(stack: Stack, dataset: Path) -> None:
    def registry_ready() -> bool:
        try:
            return httpx.get(f"{stack.registry}/ready", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    with LoadFrom(stack.balancer, threads=3, host=stack["edge"]) as load:
        time.sleep(1)
        stack["state"].cable(False)
        try:
            time.sleep(5)
        finally:
            stack["state"].cable(True)
        back = time.monotonic()
        stack["edge"].run(wait_for, registry_ready, 120, "registry-proxy ready again", 1)
        recovered = time.monotonic() - back
        time.sleep(1)
    print(f"state cut off for 5 s: {load.sent} predictions through the balancer; registry-proxy ready "
          f"{recovered:.1f}s after the link came back")
    assert load.failures == []  # the predictors serve their loaded version throughout
    assert load.answered == load.sent > 20

    # Once state is back, without restarting anything: a promotion reaches both hosts and a retrain succeeds.
    _, production = versions(stack)
    target = "1" if production == "2" else "2"
    stack["edge"].run(promote_through_registry, stack.registry, MODEL, target, "hosts test: after the cut")
    both_serve(stack, target)
    job = wait_job(stack, stack["edge"].run(submit, stack, text_spec(dataset, 0.5, QUICK_CANDIDATES)))
    assert job["status"] == "succeeded", job
    assert str(job["model_version"]) == "3", job
    assert versions(stack)[0] == ["1", "2", "3"]
