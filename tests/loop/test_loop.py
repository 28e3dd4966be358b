"""The loop closes by itself (`make test-loop`): a taxi-fare regression model is trained and served; traffic
whose fares then inflate is sent with its true fares as feedback; after the drift onset the test only keeps
sending traffic and feedback, and the stack must

  raise LiveQualityLow in a real Prometheus (the repository's rule) → deliver it through a real Alertmanager
  (the repository's routes) → trainer-api enqueues a retrain that trains on the labelled production rows
  (the spec's ``retrain.data: production``, read from the predictor's served log in Postgres) → the gate
  (registry-proxy) promotes it → the predictor swaps to it → live MAE is back under the threshold,

with zero failed requests. A first retrain may come too early (few drifted rows yet) and end in the gate's
pending decision; the alert's repeat, after the per-model cool-down, then retrains again. The test prints (and
writes to ``LOOP_REPORT``, when set) the time from drift onset to recovery. Accelerated with settings only:
1 s scrapes and evaluations, a 2 s ``for`` on the copied rule, 1 s Alertmanager waits (20 s repeats to
trainer-api), a 40-answer quality window, 1 s alias polling, a 30 s per-model alert cool-down.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml

from tests.support import processes as p
from tests.support.auth import ADMIN, TRAINER_TOKEN
from tests.support.jobs import wait_job
from tests.support.registry import wait_served

pytestmark = [pytest.mark.slow, pytest.mark.loop, pytest.mark.timeout(2400)]
REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = shutil.which("prometheus")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
THRESHOLD = 2.5
INFLATION = 1.6


def fare(distance: float, passengers: int, inflation: float, rng: np.random.Generator) -> float:
    return float(inflation * (3 + 2.5 * distance + 0.5 * passengers) + rng.normal(0, 0.8))


def fares(path: Path, rows: int = 400) -> Path:
    rng = np.random.default_rng(5)
    d, n = rng.uniform(0.5, 20, rows), rng.integers(1, 5, rows)
    pd.DataFrame({"distance_km": d, "passengers": n,
                  "fare": [fare(a, int(b), 1.0, rng) for a, b in zip(d, n, strict=True)]}).to_csv(path, index=False)
    return path


def spec(data: Path) -> dict[str, Any]:
    return {"task": "tabular-regression",
            "data": {"uri": str(data), "feature_columns": ["distance_km", "passengers"], "target_column": "fare"},
            "metric": {"name": "mae", "higher_is_better": False, "threshold": THRESHOLD},
            "candidates": [{"estimator": {"type": "ridge"}}],
            "retrain": {"data": "production", "window_days": 1, "max_rows": 60}}


def quality_rule() -> dict[str, Any]:
    rules = yaml.safe_load((REPO / "infra/prometheus/rules/mlops-alerts.yml").read_text())
    (rule,) = [r for g in rules["groups"] for r in g["rules"] if r["alert"] == "LiveQualityLow"]
    return {**rule, "for": "2s"}


class Traffic(threading.Thread):
    """One prediction and its true fare as feedback, over and over; counts failures; keeps a timeline."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.inflation = 1.0
        self.stopping = threading.Event()
        self.failures: list[str] = []
        self.timeline: list[tuple[float, str, float]] = []  # (time, served version, live MAE)
        self.rng = np.random.default_rng(11)

    def run(self) -> None:
        with httpx.Client(timeout=120) as client:
            while not self.stopping.is_set():
                d, n = float(self.rng.uniform(0.5, 20)), int(self.rng.integers(1, 5))
                try:
                    answer = client.post(f"{self.url}/predict",
                                         json={"instances": [{"distance_km": d, "passengers": n}]})
                    if answer.status_code != 200:
                        self.failures.append(f"predict {answer.status_code}: {answer.text[:200]}")
                        continue
                    body = answer.json()
                    fb = client.post(f"{self.url}/feedback", headers=ADMIN, json={
                        "request_id": body["request_id"], "value": fare(d, n, self.inflation, self.rng)})
                    if fb.status_code != 200:
                        self.failures.append(f"feedback {fb.status_code}: {fb.text[:200]}")
                        continue
                    self.timeline.append((time.time(), str(body["model_version"]), fb.json()["live_mae"]))
                except httpx.HTTPError as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                time.sleep(0.02)


@pytest.fixture()
def served_log_url() -> Iterator[str]:
    with p.postgres_database("mlops_test_loop") as url:
        yield url


def test_drift_to_recovery_without_a_call(base_env: dict[str, str], registry_url: str, worker_factory: Any,
                                          served_log_url: str, log_dir: Path, tmp_path: Path) -> None:
    if PROMETHEUS is None or ALERTMANAGER is None:
        pytest.skip("Debian's 'prometheus' and 'prometheus-alertmanager' packages are needed (.ci/run installs them)")
    name = f"loop-fares-{os.urandom(3).hex()}"
    models = tmp_path / "models"
    models.mkdir()
    (models / f"{name}.yaml").write_text(yaml.safe_dump(spec(fares(tmp_path / "fares.csv"))))
    queue = f"loop-{os.urandom(4).hex()}"
    env = {**base_env, "MODELS_DIR": str(models), "CELERY_QUEUE": queue, "SERVED_LOG_DATABASE_URL": served_log_url,
           "ALERT_MODEL_COOLDOWN_SECONDS": "30", "ALERT_MAX_RETRAINS_PER_DAY": "4"}
    worker_factory(env)
    started: list[p.Process] = []
    try:
        trainer, trainer_url_ = p.uvicorn_service("loop-trainer-api", "trainer.api:app", env, log_dir)
        started.append(trainer)
        # The first version, from the reference data (a long timeout: a busy machine queues slowly).
        asked = httpx.post(f"{trainer_url_}/retrain", json={"model_name": name}, headers=ADMIN, timeout=180)
        assert asked.status_code == 202, asked.text
        first = wait_job(trainer_url_, asked.json()["job_id"], timeout=900)
        assert first["decision"] == "promoted", first
        predictor, predictor_url = p.uvicorn_service("loop-predictor", "predictor.main:app", {
            **env, "MODEL_NAME": name, "POLL_INTERVAL_SECONDS": "1", "DRIFT_INTERVAL_SECONDS": "1",
            "QUALITY_WINDOW_SIZE": "40", "SERVED_LOG_FLUSH_SECONDS": "0.5"}, log_dir)
        started.append(predictor)

        token = tmp_path / "token"
        token.write_text(TRAINER_TOKEN)
        config = yaml.safe_load((REPO / "infra/alertmanager/alertmanager.yml").read_text())
        config["route"].update(group_wait="1s", group_interval="2s")
        # A retrain that could not fix it (too few drifted rows yet: pending) is asked again after 20 s, not 1 h.
        config["route"]["routes"][0]["repeat_interval"] = "20s"
        for receiver in config["receivers"]:
            hook = receiver["webhook_configs"][0]
            if receiver["name"] == "trainer-api":
                hook["url"] = f"{trainer_url_}/alerts/alertmanager"
                hook["http_config"]["authorization"]["credentials_file"] = str(token)
            else:
                hook["url"] = f"{trainer_url_}/health"  # the operators' webhook: anything that answers 2xx
        (tmp_path / "am.yml").write_text(yaml.safe_dump(config))
        am_port = p.free_port()
        started.append(p.Process("loop-alertmanager", [
            ALERTMANAGER, f"--config.file={tmp_path / 'am.yml'}", f"--storage.path={tmp_path / 'am'}",
            f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address=", "--log.level=warn"],
            {}, log_dir).start())
        (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "loop", "rules": [quality_rule()]}]}))
        prom_port = p.free_port()
        (tmp_path / "prom.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(tmp_path / "rules.yml")],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
            "scrape_configs": [{"job_name": "predictor",
                                "static_configs": [{"targets": [predictor_url.split("://")[1]]}]}]}))
        prometheus = p.Process("loop-prometheus", [
            PROMETHEUS, f"--config.file={tmp_path / 'prom.yml'}", f"--storage.tsdb.path={tmp_path / 'prom'}",
            f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"], {}, log_dir).start()
        started.append(prometheus)
        prometheus.wait_http(f"http://127.0.0.1:{prom_port}/-/ready", timeout=120)

        wait_served(predictor_url, str(first["model_version"]), timeout=300)  # traffic starts once it serves
        traffic = Traffic(predictor_url)
        traffic.start()
        try:
            time.sleep(15)  # before the drift: the model is right
            onset = time.time()
            traffic.inflation = INFLATION
            events: dict[str, float] = {"drift onset": onset}
            recovered = None
            deadline = time.monotonic() + 900
            while time.monotonic() < deadline:
                time.sleep(1)
                if "alert" not in events:
                    alerts = httpx.get(f"http://127.0.0.1:{prom_port}/api/v1/alerts", timeout=60).json()
                    if any(a["state"] == "firing" for a in alerts["data"]["alerts"]):
                        events["alert"] = time.time()
                jobs = httpx.get(f"{trainer_url_}/jobs", params={"model_name": name}, timeout=60).json()["jobs"]
                alerted = [j for j in jobs if j["source"] == "alert:alertmanager"]
                if alerted and "retrain" not in events:
                    events["retrain"] = time.time()
                if any(j["decision"] == "promoted" for j in alerted) and "promotion" not in events:
                    events["promotion"] = time.time()
                window = [t for t in traffic.timeline if t[0] > events.get("promotion", float("inf"))]
                if len(window) > 45 and window[-1][1] != str(first["model_version"]) and window[-1][2] < THRESHOLD:
                    recovered = window[-1]
                    events["recovered"] = recovered[0]
                    break
        finally:
            traffic.stopping.set()
            traffic.join(30)
        report = {"events": {k: round(v - onset, 1) for k, v in events.items()}, "threshold": THRESHOLD,
                  "requests": len(traffic.timeline), "failed_requests": len(traffic.failures),
                  "timeline": [(round(t - onset, 2), v, m) for t, v, m in traffic.timeline]}
        if os.environ.get("LOOP_REPORT"):
            Path(os.environ["LOOP_REPORT"]).write_text(json.dumps(report))
        print(f"\nloop: {json.dumps(report['events'])}; {report['requests']} requests, "
              f"{report['failed_requests']} failed")
        assert recovered is not None, (report["events"], jobs, traffic.timeline[-5:])
        alerted = [j for j in jobs if j["source"] == "alert:alertmanager"]
        promoted = next(j for j in alerted if j["decision"] == "promoted")
        # It trained on what production served and was labelled with, not on the reference file.
        assert promoted["dataset"]["source"].startswith(f"production:{name}?"), promoted["dataset"]
        assert promoted["dataset"]["lineage"]["versions"], promoted["dataset"]
        assert traffic.failures == []
    finally:
        for proc in reversed(started):
            proc.stop()
