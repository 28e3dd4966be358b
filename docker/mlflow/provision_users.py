"""Create or update the MLflow basic-auth users of the stack's services, idempotently.

    python provision_users.py --tracking-uri http://mlflow:5000 \
        --user registry-proxy=/run/secrets/mlops/mlflow_password_registry_proxy \
        --user trainer=/run/secrets/mlops/mlflow_password_trainer \
        --user predictor=env:PREDICTOR_PASSWORD \
        --manager registry-proxy --experiment-writer trainer

Authenticates as an MLflow admin from MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD. For every
``--user NAME=SOURCE`` (SOURCE is a password file, or ``env:VARNAME``) it creates the user, or sets its
password when it exists (and drops an admin flag it should not have). ``--manager`` is granted MANAGE on every
registered model that exists (the creator of a registered model gets MANAGE by itself, so this is for models
created before authentication was turned on); ``--experiment-writer`` likewise gets EDIT on every existing
experiment (a run can only be created in an experiment the caller may update). Every step is an upsert, so
running it again changes nothing but the passwords.

It waits (bounded by ``--timeout``) for the server's /health, exits 0 on success and non-zero with one line
on stderr on failure. It never prints a password. Standalone: the standard library only (it speaks MLflow's REST
API: /api/2.0/mlflow/users/..., /api/3.0/mlflow/users/permissions/...), so it runs inside the MLflow image as well as
from the tests, and starts in well under a second.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MIN_PASSWORD_LENGTH = 12  # MLflow's own policy (mlflow.utils.validation._validate_password)
PROMPT_TAG = "mlflow.prompt.is_prompt"
API2, API3 = "/api/2.0/mlflow", "/api/3.0/mlflow"


class ProvisioningError(Exception):
    """A failure with a one-line, password-free reason."""


@dataclass(frozen=True)
class ServiceUser:
    name: str
    password: str

    def __repr__(self) -> str:  # never show the password, even in a traceback
        return f"ServiceUser(name={self.name!r}, password=***)"


def read_password(name: str, source: str) -> str:
    if source.startswith("env:"):
        var = source[4:]
        value = os.environ.get(var, "")
        if not value.strip():
            raise ProvisioningError(f"user {name}: environment variable {var} is unset or empty")
        password = value.strip()
    else:
        try:
            password = Path(source).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ProvisioningError(f"user {name}: cannot read password file {source} ({exc.strerror})") from None
        if not password:
            raise ProvisioningError(f"user {name}: password file {source} is empty")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ProvisioningError(f"user {name}: password is shorter than MLflow's minimum of "
                                f"{MIN_PASSWORD_LENGTH} characters")
    return password


def parse_user(spec: str) -> tuple[str, str]:
    name, sep, source = spec.partition("=")
    if not sep or not name.strip() or not source.strip():
        raise ProvisioningError(f"--user {spec.split('=', 1)[0]!r}: expected NAME=PASSWORD_FILE or NAME=env:VARNAME")
    return name.strip(), source.strip()


def wait_for_health(tracking_uri: str, timeout: float) -> None:
    url = tracking_uri.rstrip("/") + "/health"
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(getattr(exc, "reason", exc))
        if time.monotonic() >= deadline:
            raise ProvisioningError(f"MLflow at {tracking_uri} did not answer /health within {timeout:.0f}s ({last})")
        time.sleep(1)


def one_line(exc: BaseException | str) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("..." if len(text) > 300 else "")


class ApiError(Exception):
    def __init__(self, method: str, path: str, status: int, code: str, message: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status} {code} {one_line(message)}".strip())
        self.status, self.code = status, code


class MlflowApi:
    """The few REST calls provisioning needs, over urllib with HTTP basic auth: importing mlflow's client would
    load the whole server package, which takes many seconds on a busy host."""

    def __init__(self, tracking_uri: str, username: str, password: str, timeout: float = 30) -> None:
        self.base = tracking_uri.rstrip("/")
        token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        self._headers = {"Authorization": f"Basic {token}", "Accept": "application/json"}
        self.timeout = timeout

    def __repr__(self) -> str:  # never show the credentials, even in a traceback
        return f"MlflowApi({self.base!r})"

    def request(self, method: str, path: str, params: dict[str, str] | None = None,
                body: dict[str, Any] | None = None) -> dict[str, Any]:
        url = self.base + path + ("?" + urllib.parse.urlencode(params) if params else "")
        data = json.dumps(body).encode() if body is not None else None
        headers = {**self._headers, **({"Content-Type": "application/json"} if data is not None else {})}
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        for attempt in range(4):  # a worker restarting or a connection reset: retry briefly, never on 4xx
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    raw = resp.read()
                return json.loads(raw) if raw.strip() else {}
            except urllib.error.HTTPError as exc:
                raw = exc.read()
                try:
                    payload = json.loads(raw)
                    code, message = payload.get("error_code", ""), payload.get("message", "")
                except ValueError:
                    code, message = "", raw.decode("utf-8", "replace")
                if exc.code < 500 or attempt == 3:
                    raise ApiError(method, path, exc.code, code, message) from None
            except (urllib.error.URLError, OSError) as exc:
                if attempt == 3:
                    raise ProvisioningError(f"{method} {path}: {one_line(getattr(exc, 'reason', exc))}") from None
            time.sleep(1 + attempt)
        raise AssertionError("unreachable")

    def get_user(self, name: str) -> dict[str, Any] | None:
        try:
            user: dict[str, Any] = self.request("GET", f"{API2}/users/get", {"username": name})["user"]
            return user
        except ApiError as exc:
            if exc.code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise

    def permission(self, user: str, resource_type: str, resource_id: str) -> str:
        params = {"username": user, "resource_type": resource_type, "resource_id": resource_id}
        return str(self.request("GET", f"{API3}/users/permissions/get", params)["permission"])

    def ensure_grant(self, user: str, resource_type: str, resource_id: str, permission: str,
                     enough: tuple[str, ...]) -> None:
        """Give ``user`` ``permission`` on one resource unless its effective permission is already in ``enough``.
        MLflow's grant refuses to overwrite an existing grant (RESOURCE_ALREADY_EXISTS), so a weaker one (READ,
        DENY) is revoked first."""
        if self.permission(user, resource_type, resource_id) in enough:
            return
        grant = {"username": user, "resource_type": resource_type, "resource_id": resource_id}
        try:
            self.request("POST", f"{API3}/users/permissions/grant", body={**grant, "permission": permission})
        except ApiError as exc:
            if exc.code != "RESOURCE_ALREADY_EXISTS":
                raise
            self.request("POST", f"{API3}/users/permissions/revoke", body=grant)
            self.request("POST", f"{API3}/users/permissions/grant", body={**grant, "permission": permission})

    def registered_model_names(self) -> list[str]:
        names: list[str] = []
        token = ""
        while True:
            page = self.request("GET", f"{API2}/registered-models/search",
                                {"max_results": "1000", **({"page_token": token} if token else {})})
            for model in page.get("registered_models", []):
                tags = {t.get("key"): t.get("value") for t in model.get("tags", [])}
                if str(tags.get(PROMPT_TAG, "")).lower() != "true":  # prompts are a different resource type
                    names.append(model["name"])
            token = page.get("next_page_token", "")
            if not token:
                return names

    def experiment_ids(self) -> list[str]:
        ids: list[str] = []
        token = ""
        while True:
            body: dict[str, Any] = {"max_results": 1000, "view_type": "ALL"}
            if token:
                body["page_token"] = token
            page = self.request("POST", f"{API2}/experiments/search", body=body)
            ids += [e["experiment_id"] for e in page.get("experiments", [])]
            token = page.get("next_page_token", "")
            if not token:
                return ids


def provision(tracking_uri: str, users: list[ServiceUser], manager: str | None,
              experiment_writer: str | None) -> list[str]:
    """Does the work; returns the report lines. Raises ProvisioningError."""
    admin_name = os.environ.get("MLFLOW_TRACKING_USERNAME", "")
    admin_password = os.environ.get("MLFLOW_TRACKING_PASSWORD", "")
    if not admin_name or not admin_password:
        raise ProvisioningError("set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to an MLflow admin")
    api = MlflowApi(tracking_uri, admin_name, admin_password)
    report: list[str] = []
    try:
        try:
            me = api.get_user(admin_name)
        except ApiError as exc:
            if exc.status == 401:
                raise ProvisioningError(f"MLflow rejected the admin credentials of {admin_name!r} (401)") from None
            raise
        if me is None or not me.get("is_admin"):
            raise ProvisioningError(f"MLflow user {admin_name!r} is not an admin")

        for user in users:
            if user.name == admin_name:
                raise ProvisioningError(f"user {user.name}: refusing to provision the admin account as a service user")
            existing = api.get_user(user.name)
            if existing is None:
                try:
                    api.request("POST", f"{API2}/users/create", body={"username": user.name, "password": user.password})
                    report.append(f"user {user.name}: created")
                except ApiError as exc:  # created concurrently by another provisioning run
                    if exc.code != "RESOURCE_ALREADY_EXISTS":
                        raise
                    existing = api.get_user(user.name)
            if existing is not None:
                api.request("PATCH", f"{API2}/users/update-password",
                            body={"username": user.name, "password": user.password})
                report.append(f"user {user.name}: password updated")
                if existing.get("is_admin"):
                    api.request("PATCH", f"{API2}/users/update-admin", body={"username": user.name, "is_admin": False})
                    report.append(f"user {user.name}: admin flag removed")

        if manager:
            names = api.registered_model_names()
            for name in names:
                api.ensure_grant(manager, "registered_model", name, "MANAGE", ("MANAGE",))
            report.append(f"user {manager}: MANAGE on {len(names)} existing registered model(s)")
        if experiment_writer:
            ids = api.experiment_ids()
            for experiment_id in ids:
                api.ensure_grant(experiment_writer, "experiment", experiment_id, "EDIT", ("EDIT", "MANAGE"))
            report.append(f"user {experiment_writer}: EDIT (or more) on {len(ids)} existing experiment(s)")
    except ApiError as exc:
        raise ProvisioningError(str(exc)) from None
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--user", action="append", default=[], metavar="NAME=FILE|env:VAR",
                        help="a service user and where its password is (repeatable)")
    parser.add_argument("--manager", help="a provisioned user to grant MANAGE on every existing registered model")
    parser.add_argument("--experiment-writer", help="a provisioned user to grant EDIT on every existing experiment")
    parser.add_argument("--timeout", type=float, default=120, help="seconds to wait for /health (default 120)")
    args = parser.parse_args(argv)
    try:
        if not args.user:
            raise ProvisioningError("no --user given")
        users: list[ServiceUser] = []
        for spec in args.user:
            name, source = parse_user(spec)
            if any(u.name == name for u in users):
                raise ProvisioningError(f"user {name} is given twice")
            users.append(ServiceUser(name, read_password(name, source)))
        names = {u.name for u in users}
        for flag, value in (("--manager", args.manager), ("--experiment-writer", args.experiment_writer)):
            if value and value not in names:
                raise ProvisioningError(f"{flag} {value} is not one of the --user names")
        wait_for_health(args.tracking_uri, args.timeout)
        for line in provision(args.tracking_uri, users, args.manager, args.experiment_writer):
            print(f"provision_users: {line}", flush=True)
    except ProvisioningError as exc:
        print(f"provision_users: error: {exc}", file=sys.stderr, flush=True)
        return 1
    except Exception as exc:  # noqa: BLE001 -- anything unexpected still ends in one line, not a traceback
        print(f"provision_users: error: {type(exc).__name__}: {one_line(exc)}", file=sys.stderr, flush=True)
        return 1
    print("provision_users: done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
