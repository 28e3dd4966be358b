"""Fixtures of the observability tests: a real Prometheus, and the real stack brought into every state the
dashboards and alerts are about. Built once per session; skipped with a reason when Prometheus is missing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.observability import provisioning as prov
from tests.observability.prometheus import Prometheus
from tests.observability.stack import (
    DRIFT_WINDOW,
    FAST,
    WEAK,
    Stack,
    fares,
    tabular_spec,
    text_spec,
    unique,
)
from tests.support import processes as p
from tests.support.data import sms_subset


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory, log_dir: Path) -> Iterator[Prometheus]:
    if prov.PROMETHEUS is None:
        pytest.skip(prov.NO_PROMETHEUS)
    prom = Prometheus(tmp_path_factory.mktemp("prometheus"), log_dir).start()
    try:
        yield prom
    finally:
        prom.stop()


@pytest.fixture(scope="session")
def stack(prometheus: Prometheus, trainer_url: str, registry_url: str, mlflow_uri: str,
          mlflow_credentials: p.MlflowCredentials, base_env: dict[str, str], log_dir: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Every state the panels show: a text model promoted, replaced and rolled back (with an incident), a
    tabular model, a model waiting for a human, a failed job, traffic, feedback and drift windows."""
    data = tmp_path_factory.mktemp("obs-data")
    # The session's MLflow runs with --expose-prometheus and its auth app (tests/conftest.py): Prometheus logs in
    # as MLflow's read-only user `prometheus`, as in infra/prometheus/prometheus.yml.
    s = Stack(prometheus, trainer_url, registry_url, mlflow_uri, dict(base_env), log_dir, data)
    prometheus.add_target("registry-proxy", registry_url)
    prometheus.add_target("trainer-api", trainer_url)
    prometheus.add_target("mlflow", mlflow_uri, basic_auth=mlflow_credentials.basic_auth("prometheus"))
    httpx.get(f"{mlflow_uri}/api/2.0/mlflow/experiments/search", params={"max_results": 1}, timeout=10,
              auth=mlflow_credentials.basic_auth("prometheus"))
    s.models = {"text": unique("obs-text"), "tabular": unique("obs-fares"), "pending": unique("obs-pending")}
    try:
        sms = sms_subset(data / "sms.csv", rows=800)
        s.start_predictor("text", s.models["text"])
        s.start_predictor("pending", s.models["pending"])

        first = s.retrain(s.models["text"], text_spec(sms, 0.5, FAST))
        assert first["decision"] == "promoted", first
        kept = s.retrain(s.models["text"], text_spec(sms, 0.5, WEAK))
        assert kept["decision"] == "kept", kept
        # A bad release and its repair: v2 promoted by hand, an incident, a rollback to v1.
        s.registry_post(f"/models/{s.models['text']}/promote", {"version": str(kept["model_version"]),
                                                                "reason": "observability test"})
        s.registry_post(f"/models/{s.models['text']}/incidents", {"reason": "observability test: bad release"})
        s.registry_post(f"/models/{s.models['text']}/rollback", {"reason": "observability test"})
        s.wait_served("text", str(first["model_version"]))

        tabular = s.retrain(s.models["tabular"], tabular_spec(fares(data / "fares.csv")))
        assert tabular["decision"] == "promoted", tabular
        s.start_predictor("tabular", s.models["tabular"])
        s.wait_served("tabular", str(tabular["model_version"]))

        pending = s.retrain(s.models["pending"], text_spec(sms, 0.9999, WEAK))
        assert pending["decision"] == "pending_approval", pending

        missing = data / "no-label.csv"
        missing.write_text("text\nhello\nworld\n" * 20)
        failed = s.retrain(unique("obs-failing"), text_spec(missing, 0.5, FAST))
        assert failed["status"] == "failed", failed

        # Traffic, feedback, a drift window, and a refused prediction (no production model yet).
        s.text_traffic(s.real_messages(DRIFT_WINDOW + 20, seed=3), DRIFT_WINDOW + 20)
        s.labelled_feedback(correct=True)
        for i in range(5):
            answer = s.predict("tabular", [{"distance_km": 2.0 + i, "passengers": 1}]).json()
            s.feedback("tabular", answer["request_id"], value=10.0 + i)
        s.predict("pending", ["hello"])
        httpx.post(f"{trainer_url}/alerts/grafana", json={"status": "firing", "alerts": [
            {"status": "firing", "labels": {"alertname": "warm-up", "retrain": "true",
                                            "model_name": unique("obs-unknown")}}]},
            headers={"Authorization": f"Bearer {base_env['TRAINER_API_TOKEN']}"}, timeout=30)
        for job in ("predictor", "registry-proxy", "trainer-api", "mlflow"):
            prometheus.wait_scraped(job)
        yield s
    finally:
        s.stop_all()
