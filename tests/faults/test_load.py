"""Promotion under load and a short soak: a predictor under a steady request loop while registry-proxy moves
production. Traffic goes to 127.0.0.1 only and is bounded in time."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.faults.support import (
    HAM,
    Load,
    metric_sum,
    register_text_model,
    rss_bytes,
    served_version,
    set_production,
    wait_for,
)
from tests.support import processes as p
from tests.support.auth import ADMIN
from tests.support.data import sms_subset, text_spec
from tests.support.jobs import submit, wait_job
from tests.support.load import CheckedThread
from tests.support.registry import promote_through_registry

pytestmark = pytest.mark.slow
SOAK_SECONDS = 60
PROMOTE_EVERY_SECONDS = 15
RSS_GROWTH_BOUND = 100 * 1024 * 1024


def promote(registry_url: str, name: str, version: str) -> None:
    promote_through_registry(registry_url, name, version, reason="faults test")


def test_promotions_under_load_fail_no_request(served_model: tuple[str, str, list[str]], registry_url: str) -> None:
    """Four client threads post /predict in a loop while registry-proxy promotes three times (v2, v3, back to
    v1), each promotion reaching the predictor by its alias event: not one request fails, every promoted
    version is seen serving, and the predictor ends on the last one."""
    url, name, versions = served_model
    with Load(url, threads=4) as load:
        time.sleep(1)
        for version in (versions[1], versions[2], versions[0]):
            promote(registry_url, name, version)
            wait_for(lambda v=version: served_version(url) == v, 90, f"version {version} served")
            time.sleep(1)
    print(f"promotion under load: {load.sent} requests, versions seen {sorted(load.versions)}")
    assert load.failures == []
    assert load.versions == set(versions)
    assert load.sent > 50


@pytest.fixture(scope="module")
def soak_predictor(base_env: dict[str, str], mlflow_uri: str, registry_url: str,
                   log_dir: Path) -> Iterator[tuple[str, int, str, list]]:
    """A predictor process of this module's own (its pid is needed for RSS) on the shared stack (registry-proxy
    first: the predictor asks it whose token a feedback carries)."""
    name = f"faults-soak-{uuid.uuid4().hex[:6]}"
    versions = register_text_model(mlflow_uri, name, versions=2)
    set_production(mlflow_uri, name, versions[0])
    env = {**base_env, "MODEL_NAME": name, "POLL_INTERVAL_SECONDS": "2"}
    proc, url = p.uvicorn_service(f"predictor-{name}", "predictor.main:app", env, log_dir)
    try:
        wait_for(lambda: served_version(url) == versions[0], 120, "soak predictor serves version 1")
        assert proc.proc is not None
        yield url, proc.proc.pid, name, versions
    finally:
        proc.stop()


def test_soak_mixed_traffic(soak_predictor: tuple[str, int, str, list], registry_url: str, trainer_url: str,
                            tmp_path: Path) -> None:
    """60 s of mixed traffic: three threads predicting, one sending ground-truth feedback for earlier
    predictions, one retraining the model through trainer-api (a real Celery worker; a job at a time, the
    gate may promote what it trains), and a promotion through registry-proxy every 15 s (alternating
    versions). It ends with no failed request, every retrain job succeeded with its own model version, the
    predictor's RSS at most 100 MB above its value after warm-up, and the request counts the clients sent
    equal to predictor_http_requests_total on /metrics, per handler."""
    url, pid, name, versions = soak_predictor
    upload = sms_subset(tmp_path / "soak.csv", rows=300)
    r = httpx.post(f"{trainer_url}/datasets", files={"file": ("soak.csv", upload.read_bytes(), "text/csv")},
                   headers=ADMIN, timeout=60)
    assert r.status_code == 201, r.text
    spec = text_spec(r.json()["dataset_id"], threshold=0.5)
    jobs: list[dict] = []
    before_predict = metric_sum(url, "predictor_http_requests_total", handler="/predict", method="POST")
    before_feedback = metric_sum(url, "predictor_http_requests_total", handler="/feedback", method="POST")
    feedback_sent, feedback_failures = 0, []
    stop = threading.Event()

    with Load(url, threads=3) as load:

        def give_feedback() -> None:
            nonlocal feedback_sent
            used = 0
            with httpx.Client(timeout=30, headers=ADMIN) as client:  # feedback needs role scientist+
                while not stop.is_set():
                    fresh = load.fresh_request_ids(used, 5)
                    used += len(fresh)
                    for request_id in fresh:
                        r = client.post(f"{url}/feedback", json={"request_id": request_id, "label": "ham", "index": 1})
                        feedback_sent += 1
                        if r.status_code != 200:
                            feedback_failures.append(f"{r.status_code} {r.text[:200]}")
                    time.sleep(0.2)

        def retrain() -> None:
            while not stop.is_set():
                sent = submit(trainer_url, name, spec)
                if sent.status_code != 202:
                    jobs.append({"status": f"HTTP {sent.status_code}", "error": sent.text[:200]})
                    return
                jobs.append(wait_job(trainer_url, sent.json()["job_id"], timeout=300))

        feeder = CheckedThread(give_feedback, name="feedback")
        feeder.start()
        retrainer = CheckedThread(retrain, name="retrain")
        retrainer.start()
        time.sleep(10)
        warm_rss = rss_bytes(pid)
        start = time.monotonic()
        targets = itertools.cycle([versions[1], versions[0]])
        promotions, promote_seconds = 0, []
        # One promotion at the start of every PROMOTE_EVERY_SECONDS slot, however long the last one took (a
        # promotion waits for the model's governance lock while a retrain of the same model is being gated).
        while time.monotonic() - start < SOAK_SECONDS:
            began = time.monotonic()
            promote(registry_url, name, next(targets))
            promote_seconds.append(time.monotonic() - began)
            promotions += 1
            next_slot = start + promotions * PROMOTE_EVERY_SECONDS
            time.sleep(max(0.0, min(next_slot, start + SOAK_SECONDS) - time.monotonic()))
        stop.set()
        thread_problems = feeder.finish(60) + retrainer.finish(300)
    end_rss = rss_bytes(pid)

    after_predict = metric_sum(url, "predictor_http_requests_total", handler="/predict", method="POST")
    after_feedback = metric_sum(url, "predictor_http_requests_total", handler="/feedback", method="POST")
    print(f"soak: {load.sent} predictions, {feedback_sent} feedbacks, {promotions} promotions, "
          f"{len(jobs)} retrains ({[j.get('decision') for j in jobs]}), "
          f"RSS {warm_rss / 2**20:.0f} MB → {end_rss / 2**20:.0f} MB, promotions took "
          f"{', '.join(f'{t:.1f}' for t in promote_seconds)} s")
    assert thread_problems == []
    assert load.failures == [] and feedback_failures == []
    assert load.sent > 100 and feedback_sent > 10 and promotions >= 4
    assert jobs, "no retrain job finished"
    assert all(j["status"] == "succeeded" for j in jobs), jobs
    trained = [j["model_version"] for j in jobs]
    assert len(set(trained)) == len(jobs) and not set(trained) & set(versions), trained
    assert set(versions) <= load.versions <= set(versions) | set(trained)
    assert end_rss - warm_rss <= RSS_GROWTH_BOUND, (warm_rss, end_rss)
    assert after_predict - before_predict == load.sent
    assert after_feedback - before_feedback == feedback_sent
    assert httpx.post(f"{url}/predict", json={"instances": [HAM]}, timeout=30).status_code == 200
