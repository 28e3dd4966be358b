"""Auth: every route of the three services is in a table route → minimal role, read from the apps themselves,
so a new route fails here until it is given a role. Each route is then tried without a token, with a wrong
one, and with a token of every role: the role just below the minimal one gets 403 with a reason, the minimal
role gets past auth. Reads are tried both on the test stack (reads open, as in local development) and on
instances started with AUTH_OPEN_READS=false (as in production). No secret ever reaches a log."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.faults.conftest import app_routes
from tests.support import processes as p
from tests.support.auth import ADMIN_TOKEN, SERVICE_TOKEN, TRAINER_TOKEN, bearer, principal_token

SERVICES = {"registry_proxy.main": "registry", "trainer.api": "trainer", "predictor.main": "predictor"}
HUMANS = ["viewer", "scientist", "approver", "admin"]
OPEN = None  # open to anyone, always: probes, scrapes and the API description, which hold no model data
DOCS = {("GET", "/docs"): OPEN, ("GET", "/docs/oauth2-redirect"): OPEN, ("GET", "/openapi.json"): OPEN,
        ("GET", "/redoc"): OPEN, ("GET", "/health"): OPEN, ("GET", "/metrics"): OPEN}
# Every route → the least role that may call it ("trainer" = only the trainer service's token).
TABLE: dict[str, dict[tuple[str, str], str | None]] = {
    "registry_proxy.main": {
        **DOCS,
        ("GET", "/ready"): OPEN,
        ("GET", "/auth/whoami"): "viewer",
        ("GET", "/principals"): "admin",
        ("POST", "/principals"): "admin",
        ("GET", "/principals/{name}"): "admin",
        ("DELETE", "/principals/{name}"): "admin",
        ("POST", "/principals/{name}/tokens"): "admin",
        ("DELETE", "/principals/{name}/tokens/{token_id}"): "admin",
        ("GET", "/models"): "viewer",
        ("GET", "/models/{name}"): "viewer",
        ("GET", "/models/{name}/versions/{version}"): "viewer",
        ("GET", "/models/{name}/dora"): "viewer",
        ("POST", "/models/{name}/gate"): "trainer",
        ("POST", "/models/{name}/promote"): "approver",
        ("POST", "/models/{name}/rollback"): "approver",
        ("POST", "/models/{name}/incidents"): "approver",
        ("POST", "/models/{name}/canary"): "approver",
        ("GET", "/models/{name}/canary"): "viewer",
        ("GET", "/models/{name}/rollout"): "viewer",
        ("POST", "/models/{name}/canary/pause"): "approver",
        ("POST", "/models/{name}/canary/resume"): "approver",
        ("POST", "/models/{name}/canary/abort"): "approver",
        ("POST", "/models/{name}/canary/approve"): "approver",
        ("POST", "/models/{name}/shadow"): "approver",
        ("GET", "/models/{name}/shadow"): "viewer",
        ("DELETE", "/models/{name}/shadow"): "approver",
        ("GET", "/models/{name}/policy"): "viewer",
        ("PUT", "/models/{name}/policy"): "approver",
        ("GET", "/models/{name}/golden-set"): "viewer",
        ("PUT", "/models/{name}/golden-set"): "approver",
        ("DELETE", "/models/{name}/golden-set"): "approver",
        ("GET", "/decisions"): "viewer",
        ("GET", "/decisions/{decision_id}"): "viewer",
        ("POST", "/decisions/{decision_id}/approve"): "approver",
        ("POST", "/decisions/{decision_id}/reject"): "approver",
        ("GET", "/audit"): "viewer",
        ("GET", "/notifications"): "viewer",
        ("GET", "/ui"): "viewer",
        ("GET", "/ui/plots/{name}/versions/{version}"): "viewer",
    },
    "trainer.api": {
        **DOCS,
        ("GET", "/ready"): OPEN,
        ("POST", "/retrain"): "scientist",
        ("GET", "/jobs"): "viewer",
        ("GET", "/jobs/{job_id}"): "viewer",
        ("GET", "/specs"): "viewer",
        ("POST", "/datasets"): "scientist",
        ("GET", "/datasets"): "viewer",
        ("GET", "/datasets/{dataset_id}"): "viewer",
        ("POST", "/alerts/grafana"): "scientist",
        ("POST", "/alerts/alertmanager"): "scientist",
    },
    "predictor.main": {
        **DOCS,
        ("GET", "/ready"): OPEN,
        ("GET", "/model"): "viewer",
        ("POST", "/predict"): "viewer",  # served by the ASGI fast path in front of FastAPI
        ("POST", "/invocations"): "viewer",  # the same fast path
        ("POST", "/feedback"): "scientist",
        ("GET", "/ping"): OPEN,  # MLflow's scoring protocol: probes, like /health
        ("GET", "/version"): OPEN,
        ("GET", "/models"): "viewer",
        ("GET", "/models/{name}"): "viewer",
        ("POST", "/models/{name}/predict"): "viewer",  # the fast path too
        ("POST", "/models/{name}/versions/{version}/predict"): "viewer",
        ("POST", "/models/{name}/feedback"): "scientist",
        # Open Inference Protocol v2: server probes open, model routes like /predict
        ("GET", "/v2"): OPEN,
        ("GET", "/v2/health/live"): OPEN,
        ("GET", "/v2/health/ready"): OPEN,
        ("GET", "/v2/models/{name}"): "viewer",
        ("GET", "/v2/models/{name}/ready"): "viewer",
        ("GET", "/v2/models/{name}/versions/{version}"): "viewer",
        ("GET", "/v2/models/{name}/versions/{version}/ready"): "viewer",
        ("POST", "/v2/models/{name}/infer"): "viewer",
        ("POST", "/v2/models/{name}/versions/{version}/infer"): "viewer",
    },
}
# Routes that need a token even where reads are open.
ALWAYS_TOKEN = {("registry_proxy.main", "GET", "/auth/whoami")}
WRONG = "wrong-token-7f3c9a1e5b"
SECRET_NAME = re.compile(r"(^|_)(token|secret|password)(_|$)")
HASHED = re.compile(r"sha256|digest")  # a token's hash may be compared: it is what a lookup is made of


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "999999", path)  # no such model, decision, principal or token


def allowed(role: str, minimal: str) -> bool:
    if role == "trainer":
        return minimal in ("viewer", "trainer")
    return minimal != "trainer" and HUMANS.index(role) >= HUMANS.index(minimal)


@pytest.fixture(scope="module")
def tokens(registry_url: str) -> dict[str, str]:
    """A token of every role: people made through the API, plus the stack's own admin and trainer."""
    made = {role: principal_token(registry_url, role)[1] for role in ("viewer", "scientist", "approver")}
    return {**made, "admin": ADMIN_TOKEN, "trainer": SERVICE_TOKEN}


@pytest.fixture(scope="module")
def routes(base_env: dict[str, str]) -> dict[str, list[tuple[str, str]]]:
    return app_routes(list(SERVICES), {**base_env, "MODEL_NAME": "route-listing"})


@pytest.fixture(scope="module")
def open_urls(registry_url: str, trainer_url: str, served_model: tuple[str, str, list[str]]) -> dict[str, str]:
    return {"registry_proxy.main": registry_url, "trainer.api": trainer_url, "predictor.main": served_model[0]}


@pytest.fixture(scope="module")
def closed_urls(base_env: dict[str, str], registry_db_url: str, registry_url: str,
                served_model: tuple[str, str, list[str]], log_dir: Path) -> Iterator[dict[str, str]]:
    """The three services as production runs them: reads need a token too (same database, MLflow, Redis)."""
    env = {**base_env, "AUTH_OPEN_READS": "false", "REGISTRY_URL": registry_url}
    procs, urls = [], {}
    try:
        for module, app, extra in (("registry_proxy.main", "registry_proxy.main:app",
                                    {"REGISTRY_DATABASE_URL": registry_db_url}),
                                   ("trainer.api", "trainer.api:app", {}),
                                   ("predictor.main", "predictor.main:app", {"MODEL_NAME": served_model[1]})):
            proc, url = p.uvicorn_service(f"closed-{SERVICES[module]}", app, {**env, **extra}, log_dir)
            procs.append(proc)
            urls[module] = url
        yield urls
    finally:
        for proc in procs:
            proc.stop()


def test_every_route_has_a_minimal_role(routes: dict[str, list[tuple[str, str]]]) -> None:
    """The table is complete: a route of any app (GETs included) without an entry fails here, and the
    enumeration really sees included routers and the fast path's routes."""
    for module in SERVICES:
        # HEAD of a GET route runs the same handler and dependencies as the GET.
        found = {(m, path) for m, path in routes[module] if not (m == "HEAD" and ("GET", path) in routes[module])}
        missing = sorted(found - set(TABLE[module]))
        stale = sorted(set(TABLE[module]) - found)
        assert missing == [], f"{module}: routes without a minimal role: {missing}"
        assert stale == [], f"{module}: table entries for routes that no longer exist: {stale}"
    assert ("POST", "/models/{name}/promote") in routes["registry_proxy.main"]
    assert ("POST", "/predict") in routes["predictor.main"]


def _check(client: httpx.Client, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    return client.request(method, concrete(path), json={}, headers=headers)


def _refused(response: httpx.Response, status: int, what: str) -> None:
    assert response.status_code == status, (what, response.status_code, response.text[:300])
    if status == 401:
        assert response.headers.get("www-authenticate", "").lower().startswith("bearer"), what
    if "json" in response.headers.get("content-type", ""):
        body = response.json()
        assert body.get("detail") or body.get("error"), what  # the Open Inference Protocol says "error"


@pytest.mark.parametrize("reads", ["closed", "open"])
@pytest.mark.parametrize("module", list(SERVICES))
def test_each_route_admits_its_minimal_role_and_refuses_the_rest(
    module: str, reads: str, tokens: dict[str, str], request: pytest.FixtureRequest
) -> None:
    """No token and a wrong token: 401 (reads stay open only where reads are open). The role just below the
    route's minimal one, and the trainer service where it has no business: 403 with the reason. The minimal
    role and every role above it get past auth (any answer but 401/403)."""
    urls = request.getfixturevalue(f"{reads}_urls")
    checked = 0
    with httpx.Client(base_url=urls[module], timeout=60, follow_redirects=False) as client:
        for (method, path), minimal in TABLE[module].items():
            if minimal is OPEN:
                r = _check(client, method, path, {})
                assert r.status_code not in (401, 403), (method, path, r.status_code)
                continue
            is_read = minimal == "viewer" and (module, method, path) not in ALWAYS_TOKEN
            anonymous = _check(client, method, path, {})
            if is_read and reads == "open":
                assert anonymous.status_code not in (401, 403), (method, path, anonymous.text[:200])
            else:
                _refused(anonymous, 401, f"{method} {path} without a token")
            for value in (f"Bearer {WRONG}", f"Basic {ADMIN_TOKEN}", "Bearer", f"Bearer {ADMIN_TOKEN}x"):
                if is_read and reads == "open" and (value == "Bearer" or value.startswith("Basic")):
                    continue  # no bearer token at all: anonymous, which an open read admits
                _refused(_check(client, method, path, {"Authorization": value}), 401, f"{method} {path}: {value}")
            for role, token in tokens.items():
                r = _check(client, method, path, bearer(token))
                if allowed(role, minimal):
                    assert r.status_code not in (401, 403), (method, path, role, r.status_code, r.text[:200])
                else:
                    _refused(r, 403, f"{method} {path} as {role}")
                    if "json" in r.headers.get("content-type", ""):
                        body = r.json()
                        assert "role" in (body.get("detail") or body.get("error")), r.text
            checked += 1
    assert checked == sum(minimal is not OPEN for minimal in TABLE[module].values())


def test_a_revoked_and_an_expired_token_are_refused(registry_url: str, trainer_url: str) -> None:
    """Revoking a token (by an admin) shuts it out of registry-proxy at once and out of the other services
    within AUTH_CACHE_SECONDS; a token past its expiry never works; a disabled principal's tokens stop."""
    name, token = principal_token(registry_url, "scientist")
    assert httpx.get(f"{registry_url}/auth/whoami", headers=bearer(token), timeout=30).json()["role"] == "scientist"
    tokens = httpx.get(f"{registry_url}/principals/{name}", headers=bearer(ADMIN_TOKEN), timeout=30).json()["tokens"]
    assert [t["prefix"] for t in tokens] == [token[:10]] and "token" not in tokens[0]  # never shown again
    r = httpx.delete(f"{registry_url}/principals/{name}/tokens/{tokens[0]['id']}", headers=bearer(ADMIN_TOKEN),
                     timeout=30)
    assert r.status_code == 200 and r.json()["revoked_at"], r.text
    r = httpx.get(f"{registry_url}/auth/whoami", headers=bearer(token), timeout=30)
    _refused(r, 401, "revoked token")
    assert "revoked" in r.json()["detail"]
    r = httpx.post(f"{trainer_url}/retrain", json={"model_name": "sms-spam"}, headers=bearer(token), timeout=30)
    _refused(r, 401, "revoked token at trainer-api")

    expired_name, expired = principal_token(registry_url, "approver", expires_at="2020-01-01T00:00:00Z")
    _refused(httpx.get(f"{registry_url}/auth/whoami", headers=bearer(expired), timeout=30), 401, "expired token")
    _refused(httpx.post(f"{registry_url}/models/sms-spam/rollback", headers=bearer(expired), timeout=30), 401,
             "expired token")

    gone, gone_token = principal_token(registry_url, "viewer")
    assert httpx.delete(f"{registry_url}/principals/{gone}", headers=bearer(ADMIN_TOKEN), timeout=30).status_code == 200
    _refused(httpx.get(f"{registry_url}/auth/whoami", headers=bearer(gone_token), timeout=30), 401,
             "disabled principal")
    audit = httpx.get(f"{registry_url}/audit", params={"action": "token.revoke"}, timeout=30).json()["items"]
    assert any(a["details"]["principal"] == name and a["actor"] == "admin" for a in audit)


def test_principals_and_tokens_are_managed_by_admins_only(registry_url: str) -> None:
    """An approver cannot make principals or tokens (403); the admin can; a bad role or name is a 422 that
    says why; a duplicate name is a 409; the new token is shown once and names its principal in whoami."""
    _, approver = principal_token(registry_url, "approver")
    r = httpx.post(f"{registry_url}/principals", json={"name": "sneaky", "role": "admin"}, headers=bearer(approver),
                   timeout=30)
    _refused(r, 403, "approver making an admin")
    r = httpx.post(f"{registry_url}/principals", json={"name": "x", "role": "root"}, headers=bearer(ADMIN_TOKEN),
                   timeout=30)
    assert r.status_code == 422 and "role" in r.text
    r = httpx.post(f"{registry_url}/principals", json={"name": "../x", "role": "viewer"},
                   headers=bearer(ADMIN_TOKEN), timeout=30)
    assert r.status_code == 422, r.text
    name, token = principal_token(registry_url, "viewer")
    r = httpx.post(f"{registry_url}/principals", json={"name": name, "role": "viewer"}, headers=bearer(ADMIN_TOKEN),
                   timeout=30)
    assert r.status_code == 409, r.text
    assert httpx.get(f"{registry_url}/auth/whoami", headers=bearer(token), timeout=30).json() == {
        "name": name, "role": "viewer", "kind": "person"}


def test_tokens_are_stored_as_hashes(registry_db_url: str, registry_url: str) -> None:
    """The registry database holds no token in clear: only sha256 digests and a short prefix."""
    import psycopg2

    _, token = principal_token(registry_url, "viewer")
    with psycopg2.connect(registry_db_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT token_sha256, prefix FROM api_tokens")
        rows = cur.fetchall()
    assert rows and all(len(digest) == 64 for digest, _ in rows)
    flat = repr(rows)
    for secret in (token, ADMIN_TOKEN, SERVICE_TOKEN, TRAINER_TOKEN):
        assert secret not in flat


def test_tokens_are_never_compared_with_equality() -> None:
    """No ``==``/``!=``/``in`` on a value whose name mentions token, secret or password in service code: tokens
    are looked up by their sha256 (or compared with hmac.compare_digest)."""
    offenders = []
    for path in sorted((p.REPO / "services").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Compare):
                continue
            if not any(isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)) for op in node.ops):
                continue
            names = [n.id if isinstance(n, ast.Name) else n.attr for n in ast.walk(node)
                     if isinstance(n, (ast.Name, ast.Attribute))]
            secret_names = [n for n in names if SECRET_NAME.search(n.lower()) and not HASHED.search(n.lower())]
            if secret_names and "PLACEHOLDER_SECRET" not in names:
                offenders.append(f"{path.relative_to(p.REPO)}:{node.lineno}: {ast.unparse(node)}")
    assert offenders == [], offenders


def test_no_secret_is_logged(open_urls: dict[str, str], log_dir: Path,
                             worker_factory: Callable[..., p.Process]) -> None:
    """After authenticated and refused requests to every service, no service log (registry-proxy, trainer-api,
    workers, predictors, MLflow) contains any token value, right or wrong."""
    registry, trainer = open_urls["registry_proxy.main"], open_urls["trainer.api"]
    for token in (ADMIN_TOKEN, SERVICE_TOKEN, WRONG):
        httpx.post(f"{registry}/models/no-such-model/rollback", json={}, headers=bearer(token), timeout=60)
    httpx.post(f"{trainer}/alerts/alertmanager", json={"alerts": [{"labels": {"model_name": "no-such-model"}}]},
               headers=bearer(TRAINER_TOKEN), timeout=60)
    secrets = [ADMIN_TOKEN, SERVICE_TOKEN, TRAINER_TOKEN, WRONG]
    logs = sorted(log_dir.glob("*.log"))
    assert any("registry-proxy" in log.name for log in logs) and any("trainer-api" in log.name for log in logs)
    leaks = [f"{log.name}: {secret}" for log in logs for secret in secrets
             if secret in log.read_text(errors="replace")]
    assert leaks == []
