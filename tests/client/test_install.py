"""`pip install clients/python` into a fresh virtualenv, its dependencies from the package index, and no
service package anywhere: the client imports, the `mlops` command runs, and it fails the way it documents."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mlops_common.settings import REPO_ROOT

pytestmark = pytest.mark.slow
SERVICE_PACKAGES = ("mlops_common", "trainer", "registry_proxy", "predictor", "mlflow")


def test_the_client_installs_and_runs_on_its_own(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python, mlops = venv / "bin" / "python", venv / "bin" / "mlops"
    install = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                              str(REPO_ROOT / "clients" / "python")], capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stderr[-3000:]

    probe = ("import importlib.util, mlops_client, mlops_client.cli\n"
             f"missing = [n for n in {SERVICE_PACKAGES!r} if importlib.util.find_spec(n) is None]\n"
             "print(mlops_client.Client.__name__, len(missing))")
    answer = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.split() == ["Client", str(len(SERVICE_PACKAGES))]  # none of them is there

    helped = subprocess.run([str(mlops), "--help"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert helped.returncode == 0 and "retrain" in helped.stdout and "canary" in helped.stdout
    down = subprocess.run([str(mlops), "--trainer-url", "http://127.0.0.1:9", "--retries", "0", "jobs"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert down.returncode == 3 and "trainer-api unreachable" in down.stderr, (down.stdout, down.stderr)
