"""Auth: every mutating route refuses a missing or wrong token, tokens are compared in constant time, and no
secret ever reaches a log. The routes are read from the apps themselves, so a new unprotected route fails
here until it is protected or consciously added to the allow-list below."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, SERVICE_TOKEN, TRAINER_TOKEN
from tests.faults.conftest import app_routes
from tests.support import processes as p

MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
# Open on purpose, with the reason. Anything else that mutates must answer 401 without the right token.
OPEN_BY_DESIGN = {
    ("predictor.main", "POST", "/predict"): "serving is public inside the deployment",
    ("predictor.main", "POST", "/invocations"): "serving (MLflow scoring protocol)",
    ("predictor.main", "POST", "/feedback"): "ground truth for earlier predictions",
    ("trainer.api", "POST", "/retrain"): "documented open (trainer README): it only enqueues a job; "
                                         "production moves only through registry-proxy's token-protected gate",
    ("trainer.api", "POST", "/datasets"): "documented open (trainer README): content-addressed upload, size-capped",
}
SECRET_NAME = re.compile(r"(^|_)(token|secret|password)(_|$)")
WRONG = "Bearer wrong-token-7f3c9a1e5b"
SERVICES = {"registry_proxy.main": "registry", "trainer.api": "trainer", "predictor.main": "predictor"}


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


@pytest.fixture(scope="module")
def urls(registry_url: str, trainer_url: str, served_model: tuple[str, str, list[str]]) -> dict[str, str]:
    return {"registry_proxy.main": registry_url, "trainer.api": trainer_url, "predictor.main": served_model[0]}


@pytest.fixture(scope="module")
def mutating_routes(base_env: dict[str, str]) -> dict[str, list[tuple[str, str]]]:
    env = {**base_env, "MODEL_NAME": "route-listing"}
    routes = app_routes(list(SERVICES), env)
    return {module: [(m, path) for m, path in routes[module] if m in MUTATING] for module in SERVICES}


def test_route_enumeration_sees_the_known_mutating_routes(mutating_routes: dict[str, list[tuple[str, str]]]) -> None:
    """Guards the guard: the enumeration really lists routes of included routers (not only the app's own)."""
    assert ("POST", "/models/{name}/promote") in mutating_routes["registry_proxy.main"]
    assert ("POST", "/decisions/{decision_id}/approve") in mutating_routes["registry_proxy.main"]
    assert ("POST", "/alerts/grafana") in mutating_routes["trainer.api"]
    assert ("POST", "/predict") in mutating_routes["predictor.main"]


@pytest.mark.parametrize("module", list(SERVICES))
def test_every_mutating_route_refuses_missing_and_wrong_tokens(
    module: str, mutating_routes: dict[str, list[tuple[str, str]]], urls: dict[str, str]
) -> None:
    """Every POST/PUT/PATCH/DELETE of registry-proxy, trainer-api and predictor that is not on the allow-list
    answers 401 (with WWW-Authenticate) to a request without a token, with a wrong token, with a non-bearer
    scheme and with an empty bearer, before it looks at the body."""
    checked = []
    with httpx.Client(base_url=urls[module], timeout=60) as client:
        for method, path in mutating_routes[module]:
            if (module, method, path) in OPEN_BY_DESIGN:
                continue
            for headers in ({}, {"Authorization": WRONG}, {"Authorization": f"Basic {ADMIN_TOKEN}"},
                            {"Authorization": "Bearer"}, {"Authorization": f"Bearer {ADMIN_TOKEN}x"}):
                response = client.request(method, concrete(path), json={}, headers=headers)
                assert response.status_code == 401, (method, path, headers, response.status_code, response.text)
                assert response.headers.get("www-authenticate", "").lower().startswith("bearer")
                assert response.json()["detail"]
            checked.append((method, path))
    if module != "predictor.main":
        assert checked, f"no protected route found in {module}"


def test_the_right_token_gets_past_auth(urls: dict[str, str], model_name: str) -> None:
    """The 401s above come from the token check, not from a route that refuses everything: with the right
    token the same routes answer something other than 401."""
    registry, trainer = urls["registry_proxy.main"], urls["trainer.api"]
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    r = httpx.post(f"{registry}/models/{model_name}/promote", json={"version": "1"}, headers=admin, timeout=60)
    assert r.status_code not in (401, 403, 500), r.text
    r = httpx.post(f"{registry}/decisions/999999/approve", json={}, headers=admin, timeout=60)
    assert r.status_code == 404, r.text
    r = httpx.post(f"{trainer}/alerts/grafana", json={"status": "resolved", "alerts": []},
                   headers={"Authorization": f"Bearer {TRAINER_TOKEN}"}, timeout=60)
    assert r.status_code == 202, r.text


def test_only_a_human_decides_pending_decisions(urls: dict[str, str]) -> None:
    """The trainer's service token can report gate results but cannot approve or reject a pending decision:
    403 on POST /decisions/{id}/approve and /reject, so human approval cannot be bypassed by the trainer."""
    registry = urls["registry_proxy.main"]
    for action in ("approve", "reject"):
        r = httpx.post(f"{registry}/decisions/999999/{action}", json={},
                       headers={"Authorization": f"Bearer {SERVICE_TOKEN}"}, timeout=60)
        assert r.status_code == 403, r.text
        assert "REGISTRY_ADMIN_TOKEN" in r.json()["detail"]


def test_tokens_are_compared_in_constant_time() -> None:
    """Every comparison in service code that involves a token or secret goes through hmac.compare_digest:
    no ``==``/``!=``/``in`` on a value whose name mentions token, secret or password."""
    offenders = []
    uses_compare_digest = []
    for path in sorted((p.REPO / "services").rglob("*.py")):
        source = path.read_text()
        if "compare_digest" in source:
            uses_compare_digest.append(path.name)
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.Compare):
                continue
            if not any(isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)) for op in node.ops):
                continue
            names = [n.id if isinstance(n, ast.Name) else n.attr for n in ast.walk(node)
                     if isinstance(n, (ast.Name, ast.Attribute))]
            if any(SECRET_NAME.search(name.lower()) for name in names) and "PLACEHOLDER_SECRET" not in names:
                offenders.append(f"{path.relative_to(p.REPO)}:{node.lineno}: {ast.unparse(node)}")
    assert offenders == [], offenders
    assert {"auth.py", "deps.py"} <= set(uses_compare_digest), uses_compare_digest


def test_no_secret_is_logged(urls: dict[str, str], log_dir: Path) -> None:
    """After authenticated and refused requests to every service, no service log (registry-proxy, trainer-api,
    workers, predictors, MLflow) contains any token value, right or wrong."""
    registry, trainer = urls["registry_proxy.main"], urls["trainer.api"]
    for token in (ADMIN_TOKEN, SERVICE_TOKEN, "wrong-token-7f3c9a1e5b"):
        httpx.post(f"{registry}/models/no-such-model/rollback", json={}, headers={"Authorization": f"Bearer {token}"},
                   timeout=60)
    httpx.post(f"{trainer}/alerts/alertmanager", json={"alerts": [{"labels": {"model_name": "no-such-model"}}]},
               headers={"Authorization": f"Bearer {TRAINER_TOKEN}"}, timeout=60)
    secrets = [ADMIN_TOKEN, SERVICE_TOKEN, TRAINER_TOKEN, "wrong-token-7f3c9a1e5b"]
    logs = sorted(log_dir.glob("*.log"))
    assert any("registry-proxy" in log.name for log in logs) and any("trainer-api" in log.name for log in logs)
    leaks = [f"{log.name}: {secret}" for log in logs for secret in secrets
             if secret in log.read_text(errors="replace")]
    assert leaks == []
