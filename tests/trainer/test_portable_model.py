"""A version logged as the trainer logs it serves where none of this project's packages are installed: MLflow's own
scoring server (`mlflow models serve --env-manager local`) run from a fresh virtualenv that holds only MLflow and
the model's requirements.txt. The project code the pipeline is made of travels inside the model (``code/``)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from sklearn.pipeline import Pipeline

from mlops_common.names import PRODUCTION_ALIAS
from mlops_common.spec import ModelSpec
from predictor.loading import ModelTrust, load_sklearn_pyfunc
from tests.support import processes as p
from tests.support.data import sms, text_spec
from trainer import taxi, training
from trainer.candidates import build

pytestmark = pytest.mark.slow

PROJECT_DISTS = ("mlops-common", "mlops-trainer", "mlops-registry-proxy", "mlops-predictor", "mlops-mlflow-server")
TEXTS = ["WINNER!! Claim your free prize now, call 09061701461", "Are we still meeting for lunch tomorrow?",
         "URGENT: your mobile number has won a 2000 pound bonus", "ok see you at 7"]


def _uv() -> str | None:
    beside = Path(sys.executable).parent / "uv"
    return str(beside) if beside.exists() else shutil.which("uv")


def _install(python: Path, *args: str) -> None:
    uv = _uv()
    cmd = ([uv, "pip", "install", "--quiet", "--python", str(python), *args] if uv
           else [str(python), "-m", "pip", "install", "--quiet", *args])
    subprocess.run(cmd, check=True, timeout=900, env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"})


def _clean_env(venv: Path) -> dict[str, str]:
    """The environment of a process of the clean venv: nothing of the project's venv on PATH or PYTHONPATH."""
    project_bin = str(Path(sys.executable).parent)
    path = [venv / "bin", *(entry for entry in os.environ["PATH"].split(os.pathsep) if entry != project_bin)]
    env = {k: v for k, v in p.inherited_env().items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    return {**env, "PATH": os.pathsep.join(map(str, path)), "VIRTUAL_ENV": str(venv)}


@pytest.fixture(scope="module")
def clean_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One fresh virtualenv for the module with the project's pinned MLflow; each model adds its own requirements."""
    venv = tmp_path_factory.mktemp("clean") / "venv"
    uv = _uv()
    if uv:
        subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True, timeout=120,
                       env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"})
    else:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    _install(venv / "bin" / "python", f"mlflow=={metadata.version('mlflow')}")
    probe = subprocess.run([str(venv / "bin" / "python"), "-c", "import mlops_common"], env=_clean_env(venv),
                           cwd=venv, capture_output=True, text=True)
    assert "No module named 'mlops_common'" in probe.stderr, "the clean venv must not see the project's packages"
    return venv


def _log_and_register(mlflow_uri: str, name: str, pipe: Pipeline, example: pd.DataFrame) -> str:
    mlflow.set_tracking_uri(mlflow_uri)
    mlflow.set_registry_uri(mlflow_uri)
    mlflow.set_experiment(f"portable-{name}")
    path_before = list(sys.path)
    with mlflow.start_run():
        info = training.log_model(pipe, example)
    assert sys.path == path_before
    version = str(mlflow.register_model(info.model_uri, name).version)
    MlflowClient(mlflow_uri).set_registered_model_alias(name, PRODUCTION_ALIAS, version)
    return version


def _check_model_dir(model_dir: Path, shipped: list[str]) -> None:
    """What MLflow wrote: the pipeline's own modules under code/mlops_common, no project package in the
    requirements."""
    assert sorted(f.name for f in (model_dir / "code" / "mlops_common").iterdir()) == ["__init__.py", *shipped]
    requirements = (model_dir / "requirements.txt").read_text().split()
    conda = yaml.safe_load((model_dir / "conda.yaml").read_text())
    conda_pip = next(dep["pip"] for dep in conda["dependencies"] if isinstance(dep, dict))
    for line in (*requirements, *conda_pip):
        assert not line.lower().replace("_", "-").startswith(PROJECT_DISTS), line
    assert any(line.startswith("mlflow==") for line in requirements)


@contextlib.contextmanager
def _mlflow_serve(venv: Path, model_uri: str, mlflow_uri: str, credentials: p.MlflowCredentials,
                  log_dir: Path) -> Iterator[str]:
    port = p.free_port()
    env = {**_clean_env(venv), "MLFLOW_TRACKING_URI": mlflow_uri, **credentials.env("predictor")}
    log_path = log_dir / f"mlflow-serve-clean-{port}.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen([str(venv / "bin" / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager",
                                 "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
                                env=env, cwd=venv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow models serve did not come up:\n{log_path.read_text(errors='replace')[-4000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            time.sleep(0.5)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def _serve_and_compare(clean_venv: Path, mlflow_uri: str, credentials: p.MlflowCredentials, log_dir: Path,
                       tmp_path: Path, name: str, pipe: Pipeline, frame: pd.DataFrame,
                       shipped: list[str]) -> list[Any]:
    """Registers ``pipe`` as ``name``@production, serves it from the clean venv and returns the served predictions
    of ``frame`` (checked against the pipeline's own and the predictor's loader)."""
    version = _log_and_register(mlflow_uri, name, pipe, frame.head(3))
    model_uri = f"models:/{name}@{PRODUCTION_ALIAS}"
    model_dir = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=str(tmp_path / "model")))
    _check_model_dir(model_dir, shipped)
    _install(clean_venv / "bin" / "python", "-r", str(model_dir / "requirements.txt"))

    expected = pipe.predict(frame)
    loaded = load_sklearn_pyfunc(model_dir, f"{name} v{version}", ModelTrust())
    np.testing.assert_array_equal(loaded.predict(frame), expected)

    body = {"dataframe_split": frame.to_dict(orient="split", index=False)}
    with _mlflow_serve(clean_venv, model_uri, mlflow_uri, credentials, log_dir) as url:
        response = httpx.post(f"{url}/invocations", json=body, timeout=60)
    assert response.status_code == 200, response.text
    served: list[Any] = response.json()["predictions"]
    assert len(served) == len(expected)
    return served


def test_text_model_serves_without_the_project(clean_venv: Path, mlflow_uri: str,
                                              mlflow_credentials: p.MlflowCredentials, log_dir: Path,
                                              tmp_path: Path, model_name: str) -> None:
    spec = ModelSpec.model_validate({"name": model_name, **text_spec("unused.csv")})
    assert spec.candidates
    texts, labels = sms(300)
    pipe = build(spec, spec.candidates[0], 0).fit(pd.DataFrame({"text": texts}), labels)
    frame = pd.DataFrame({"text": TEXTS})
    served = _serve_and_compare(clean_venv, mlflow_uri, mlflow_credentials, log_dir, tmp_path, model_name, pipe,
                                frame, ["featurizers.py"])
    assert served == list(pipe.predict(frame))


def test_tabular_model_serves_without_the_project(clean_venv: Path, mlflow_uri: str,
                                                 mlflow_credentials: p.MlflowCredentials, log_dir: Path,
                                                 tmp_path: Path, model_name: str) -> None:
    spec = ModelSpec.model_validate({"name": model_name, **taxi.spec("unused.csv", fast=True)})
    assert spec.candidates
    train = taxi.generate(1, 400, seed=3)
    forest = next(i for i, c in enumerate(spec.candidates) if c.estimator.type == "random_forest")
    pipe = build(spec, spec.candidates[forest], forest).fit(train[taxi.FEATURES], train["fare_amount"])
    frame = taxi.generate(2, 6, seed=5)[taxi.FEATURES].reset_index(drop=True)
    served = _serve_and_compare(clean_venv, mlflow_uri, mlflow_credentials, log_dir, tmp_path, model_name, pipe,
                                frame, ["tabular.py"])
    assert served == pytest.approx(list(pipe.predict(frame)), rel=1e-9)
