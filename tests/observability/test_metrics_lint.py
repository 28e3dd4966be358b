"""Every service's /metrics passes ``promtool check metrics`` (Prometheus naming and exposition lint)."""

from __future__ import annotations

import subprocess

import httpx
import pytest

from tests.observability import provisioning as prov
from tests.observability.stack import Stack
from tests.support.processes import MlflowCredentials

pytestmark = pytest.mark.slow


@pytest.mark.skipif(prov.PROMTOOL is None, reason=prov.NO_PROMETHEUS)
@pytest.mark.parametrize("service", ["predictor", "registry-proxy", "trainer-api", "mlflow"])
def test_metrics_pass_promtool(stack: Stack, mlflow_credentials: MlflowCredentials, service: str) -> None:
    url = {"predictor": stack.urls["text"], "registry-proxy": stack.registry_url, "trainer-api": stack.trainer_url,
           "mlflow": stack.mlflow_url}[service]
    # MLflow's /metrics is behind its auth app: read as its read-only user `prometheus`, as Prometheus does.
    auth = mlflow_credentials.basic_auth("prometheus") if service == "mlflow" else None
    exposition = httpx.get(f"{url}/metrics", timeout=10, auth=auth)
    assert exposition.status_code == 200
    result = subprocess.run([prov.PROMTOOL, "check", "metrics"], input=exposition.text, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, f"{service}:\n{result.stdout}{result.stderr}"
