"""Alerts that arrive: a real Prometheus evaluates the stack's drift rule, sends it to a real Alertmanager run
with ``infra/alertmanager/alertmanager.yml``, and Alertmanager delivers it to a real trainer-api (with the
trainer token from a credentials file) and to the operators' webhook; trainer-api enqueues a retrain.

Only what a test cannot wait for is changed in the copies of the configs: the rule's ``for`` and the
evaluation interval (seconds instead of minutes), the group waits, the receivers' URLs and the token file's
path. The drift series comes from a small exporter in the test process (a predictor whose drift crosses the
threshold needs minutes of traffic; tests/observability/test_alerts.py shows that part)."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.observability import provisioning as prov
from tests.observability.stack import FAST, text_spec, unique
from tests.support import processes as p
from tests.support.auth import TRAINER_TOKEN
from tests.support.data import sms_subset

ALERTMANAGER_YML = prov.REPO / "infra/alertmanager/alertmanager.yml"
AMTOOL = shutil.which("amtool")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
NO_ALERTMANAGER = ("Debian's 'prometheus-alertmanager' package is not installed "
                   "(apt-get install -y prometheus-alertmanager; .ci/run does it)")


def test_alertmanager_config_is_valid() -> None:
    if AMTOOL is None:
        pytest.skip(NO_ALERTMANAGER)
    result = subprocess.run([AMTOOL, "check-config", str(ALERTMANAGER_YML)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alertmanager_routes_retrain_alerts_to_trainer_and_everything_to_operators() -> None:
    config = yaml.safe_load(ALERTMANAGER_YML.read_text())
    route = config["route"]
    assert route["receiver"] == "operators" and set(route["group_by"]) == {"alertname", "model_name"}
    retrain, rest = route["routes"]
    assert retrain["receiver"] == "trainer-api" and retrain["matchers"] == ['retrain="true"'] and retrain["continue"]
    assert rest == {"receiver": "operators"}
    receivers = {r["name"]: r["webhook_configs"][0] for r in config["receivers"]}
    trainer = receivers["trainer-api"]
    assert trainer["url"] == "http://trainer-api:8002/alerts/alertmanager"
    assert trainer["http_config"]["authorization"] == {"type": "Bearer",
                                                       "credentials_file": "/run/secrets/mlops/trainer_api_token"}
    # Both Prometheus configs send to it.
    for name, target in (("prometheus.yml", "alertmanager:9093"), ("prometheus.dev.yml", "127.0.0.1:9093")):
        prom = yaml.safe_load((prov.PROMETHEUS_DIR / name).read_text())
        assert prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [target], name


class Exporter:
    """A /metrics page whose series the test sets, and a webhook that keeps what it is sent (the operators)."""

    def __init__(self) -> None:
        self.series: dict[str, float] = {}
        self.received: list[dict[str, Any]] = []
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = "".join(f"{k} {v}\n" for k, v in exporter.series.items()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                exporter.received.append(json.loads(self.rfile.read(length) or b"{}"))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Exporter:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def drift_rule(for_: str) -> dict[str, Any]:
    """The stack's ModelDrift rule as infra/prometheus/rules has it, with a shorter ``for``."""
    rules = yaml.safe_load((prov.PROMETHEUS_DIR / "rules/mlops-alerts.yml").read_text())
    (rule,) = [r for g in rules["groups"] for r in g["rules"] if r["alert"] == "ModelDrift"]
    return {**rule, "for": for_}


@pytest.fixture()
def trainer_with_spec(base_env: dict[str, str], trainer_url: str, log_dir: Path,
                      tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(trainer-api URL, model name): a trainer-api (the session's Redis, queue and worker) whose MODELS_DIR
    holds the model's spec, so an alert can retrain it."""
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    model_name = unique("am-drift")
    spec = text_spec(sms_subset(models_dir / "sms.csv", rows=300), 0.5, FAST)
    (models_dir / f"{model_name}.yaml").write_text(yaml.safe_dump(spec))
    env = {**base_env, "MODELS_DIR": str(models_dir)}
    proc, url = p.uvicorn_service("am-trainer-api", "trainer.api:app", env, log_dir)
    try:
        yield url, model_name
    finally:
        proc.stop()


def test_a_firing_rule_reaches_trainer_api_through_alertmanager(trainer_with_spec: tuple[str, str],
                                                                  tmp_path: Path, log_dir: Path) -> None:
    if prov.PROMETHEUS is None:
        pytest.skip(prov.NO_PROMETHEUS)
    if ALERTMANAGER is None:
        pytest.skip(NO_ALERTMANAGER)
    trainer, model_name = trainer_with_spec
    with Exporter() as exporter:
        exporter.series = {f'predictor_drift_score{{model_name="{model_name}",feature="overall"}}': 0.05,
                           f'predictor_drift_threshold{{model_name="{model_name}"}}': 0.1}
        token_file = tmp_path / "trainer_api_token"
        token_file.write_text(TRAINER_TOKEN)
        config = yaml.safe_load(ALERTMANAGER_YML.read_text())
        config["route"].update(group_wait="1s", group_interval="2s")
        for receiver in config["receivers"]:
            hook = receiver["webhook_configs"][0]
            if receiver["name"] == "trainer-api":
                hook["url"] = f"{trainer}/alerts/alertmanager"
                hook["http_config"]["authorization"]["credentials_file"] = str(token_file)
            else:
                hook["url"] = f"{exporter.url}/operators"
        am_config = tmp_path / "alertmanager.yml"
        am_config.write_text(yaml.safe_dump(config))
        am_port, cluster_port = p.free_port(), p.free_port()
        alertmanager = p.Process(f"alertmanager-{am_port}", [
            ALERTMANAGER, f"--config.file={am_config}", f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{am_port}", f"--cluster.listen-address=127.0.0.1:{cluster_port}",
            "--log.level=warn"], {}, log_dir).start()

        rules = tmp_path / "rules.yml"
        rules.write_text(yaml.safe_dump({"groups": [{"name": "mlops", "rules": [drift_rule("2s")]}]}))
        prom_port = p.free_port()
        prom_config = tmp_path / "prometheus.yml"
        prom_config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
            "scrape_configs": [{"job_name": "predictor",
                                "static_configs": [{"targets": [exporter.url.split("://")[1]]}]}],
        }))
        prometheus = p.Process(f"prometheus-am-{prom_port}", [
            prov.PROMETHEUS, f"--config.file={prom_config}", f"--storage.tsdb.path={tmp_path / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"], {}, log_dir).start()
        try:
            alertmanager.wait_http(f"http://127.0.0.1:{am_port}/-/ready", timeout=60)
            prometheus.wait_http(f"http://127.0.0.1:{prom_port}/-/ready", timeout=60)
            # Under the threshold: nothing fires, nothing is queued.
            time.sleep(5)
            assert httpx.get(f"{trainer}/jobs", params={"model_name": model_name}, timeout=10).json()["jobs"] == []

            exporter.series[f'predictor_drift_score{{model_name="{model_name}",feature="overall"}}'] = 0.3
            jobs: list[dict[str, Any]] = []
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and not jobs:
                time.sleep(1)
                jobs = httpx.get(f"{trainer}/jobs", params={"model_name": model_name}, timeout=10).json()["jobs"]
            assert jobs, (f"no retrain job within 90s; alertmanager log:\n{alertmanager.log_tail()}\n"
                          f"prometheus log:\n{prometheus.log_tail()}")
            (job,) = jobs
            assert job["source"] == "alert:alertmanager"
            # The operators got the same alert, labelled as the rule labels it.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not exporter.received:
                time.sleep(0.5)
            (note, *_) = exporter.received
            (alert,) = note["alerts"]
            assert alert["labels"]["alertname"] == "ModelDrift" and alert["labels"]["model_name"] == model_name
            assert alert["labels"]["retrain"] == "true" and alert["status"] == "firing"
            # Alertmanager repeats the group (group_interval 2 s here) without a second retrain.
            time.sleep(6)
            again = httpx.get(f"{trainer}/jobs", params={"model_name": model_name}, timeout=10).json()["jobs"]
            assert [j["job_id"] for j in again] == [job["job_id"]]
        finally:
            prometheus.stop()
            alertmanager.stop()
