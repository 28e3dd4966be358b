"""Fixtures of the fault tests: a trainer-api and a predictor serving a real (tiny) model on the shared stack."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.faults.support import register_text_model, served_version, set_production, wait_for
from tests.support import processes as p

ROUTES_SCRIPT = """
import json, sys
from importlib import import_module
app = import_module(sys.argv[1]).app
try:  # FastAPI >= 0.16x keeps included routers lazily; this flattens them
    from fastapi.routing import iter_route_contexts
    items = list(iter_route_contexts(app.routes))
except ImportError:
    items = list(app.routes)
routes = []
for item in items:
    route = getattr(item, "original_route", item)
    path = getattr(item, "path", None) or route.path
    methods = sorted(getattr(item, "methods", None) or getattr(route, "methods", None) or [])
    routes.append({"path": path, "methods": methods})
print(json.dumps(routes))
"""


def app_routes(modules: list[str], env: dict[str, str]) -> dict[str, list[tuple[str, str]]]:
    """Every (method, path) each FastAPI app in ``modules`` serves, read from the app itself (one subprocess per
    app, with the service's environment, run side by side), including routes hidden from the OpenAPI document."""
    full_env = {**p.inherited_env(), **env}
    procs = {module: subprocess.Popen([sys.executable, "-c", ROUTES_SCRIPT, module], env=full_env, cwd=p.REPO,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for module in modules}
    found = {}
    for module, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"listing the routes of {module} failed:\n{err[-3000:]}"
        routes = json.loads(out.strip().splitlines()[-1])
        found[module] = sorted({(m, r["path"]) for r in routes for m in r["methods"]})
    return found


@pytest.fixture(scope="session")
def served_model(predictor_factory: Callable[..., str], mlflow_uri: str,
                 registry_url: str) -> tuple[str, str, list[str]]:
    """(predictor URL, model name, versions): a predictor of the shared stack serving version 1 of a small
    sms-spam classifier registered three times. registry-proxy starts first: the predictor checks tokens
    (``POST /feedback``) with it."""
    name = f"faults-{uuid.uuid4().hex[:8]}"
    versions = register_text_model(mlflow_uri, name, versions=3)
    set_production(mlflow_uri, name, versions[0])
    url = predictor_factory(name)
    wait_for(lambda: served_version(url) == versions[0], 120, "predictor serves version 1")
    return url, name, versions


@pytest.fixture(scope="session")
def faults_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("faults")
