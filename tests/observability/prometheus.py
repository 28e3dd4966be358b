"""A real Prometheus (Debian's binary) for the tests: free port on 127.0.0.1, 1 s scrapes, file-based
targets that a test can change while it runs, a job's basic-auth login (MLflow's /metrics), and the stack's
alert rules loaded."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.observability import provisioning as prov
from tests.support import processes as p

JOBS = ("prometheus", "predictor", "registry-proxy", "trainer-api", "mlflow")


class Prometheus:
    def __init__(self, workdir: Path, log_dir: Path) -> None:
        self.workdir = workdir
        self.log_dir = log_dir
        self.port = p.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = workdir / "prometheus.yml"
        self.targets: dict[str, list[str]] = {job: [] for job in JOBS}
        self.basic_auth: dict[str, str] = {}  # job -> username; its password in password_file(job)
        self.process: p.Process | None = None

    def config(self) -> dict[str, Any]:
        jobs = []
        for job in JOBS:
            scrape: dict[str, Any] = {"job_name": job, "file_sd_configs": [
                {"files": [str(self.workdir / f"targets-{job}.json")], "refresh_interval": "1s"}]}
            if job in self.basic_auth:
                scrape["basic_auth"] = {"username": self.basic_auth[job],
                                        "password_file": str(self.password_file(job))}
            jobs.append(scrape)
        return {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(prov.PROMETHEUS_DIR / "rules/mlops-alerts.yml")],
            "scrape_configs": jobs,
        }

    def password_file(self, job: str) -> Path:
        return self.workdir / f"password-{job}"

    def write_config(self) -> None:
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(self.config()))
        tmp.replace(self.config_path)

    def start(self) -> Prometheus:
        self.write_config()
        self.set_targets("prometheus", [f"127.0.0.1:{self.port}"])
        for job in JOBS[1:]:
            self.set_targets(job, [])
        cmd = [prov.PROMETHEUS, f"--config.file={self.config_path}", f"--storage.tsdb.path={self.workdir / 'data'}",
               f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=2h",
               "--log.level=warn"]
        self.process = p.Process(f"prometheus-{self.port}", cmd, {}, self.log_dir).start()
        self.process.wait_http(f"{self.url}/-/ready", timeout=60)
        return self

    def stop(self) -> None:
        if self.process:
            self.process.stop()

    def set_targets(self, job: str, targets: list[str]) -> None:
        """Replace a job's targets (host:port); Prometheus notices the file within a second or two."""
        self.targets[job] = list(targets)
        path = self.workdir / f"targets-{job}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps([{"targets": targets, "labels": {}}] if targets else []))
        tmp.replace(path)

    def add_target(self, job: str, url: str, basic_auth: tuple[str, str] | None = None) -> None:
        """Scrape ``url`` (its /metrics) in ``job``; ``basic_auth=(username, password)`` logs the whole job in
        (the password goes to a mode-600 file in the work dir, the config names it; Prometheus reloads)."""
        if basic_auth is not None:
            self.set_basic_auth(job, *basic_auth)
        host = url.split("://", 1)[-1].rstrip("/")
        if host not in self.targets[job]:
            self.set_targets(job, [*self.targets[job], host])

    def set_basic_auth(self, job: str, username: str, password: str, timeout: float = 30) -> None:
        path = self.password_file(job)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password)
        os.chmod(path, 0o600)
        if self.basic_auth.get(job) == username:
            return  # same config: Prometheus reads the password file at every scrape
        self.basic_auth[job] = username
        self.write_config()
        if self.process is None:
            return  # start() writes this config
        self.process.signal(signal.SIGHUP)  # reload the configuration
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            loaded = httpx.get(f"{self.url}/api/v1/status/config", timeout=10).json()["data"]["yaml"]
            if str(path) in loaded:
                return
            time.sleep(0.2)
        raise AssertionError(f"Prometheus did not load the basic_auth of job {job} within {timeout}s")

    def query(self, expr: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", f"{expr}\n-> {body}"
        return body["data"]["result"]

    def values(self, expr: str) -> dict[str, float]:
        """{label set rendered as text: value} of an instant query."""
        return {json.dumps(r["metric"], sort_keys=True): float(r["value"][1]) for r in self.query(expr)}

    def wait_for(self, expr: str, check: Callable[[list[dict[str, Any]]], bool], timeout: float = 60,
                 what: str = "") -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            result = self.query(expr)
            if check(result):
                return result
            time.sleep(1)
        raise AssertionError(f"timed out after {timeout}s waiting for {what or 'condition'} on\n{expr}\n"
                             f"last result: {result}")

    def metric_names(self) -> set[str]:
        response = httpx.get(f"{self.url}/api/v1/label/__name__/values", timeout=10)
        return set(response.json()["data"])

    def wait_scraped(self, job: str, timeout: float = 30) -> None:
        self.wait_for(f'up{{job="{job}"}} == 1', lambda r: len(r) >= len(self.targets[job]) > 0, timeout,
                      f"{job} targets to be scraped")
