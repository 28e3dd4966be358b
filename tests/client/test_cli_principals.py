"""`mlops principals` and `mlops specs` against the real registry-proxy and trainer-api: an admin creates a person,
gives them a token (printed once), lists, shows, revokes, disables; the revoked token is refused; a non-admin's
call exits 1 with the server's reason. And which token the CLI sends."""

from __future__ import annotations

import json
import uuid

import httpx
from mlops_client import token_from_env
from mlops_client.cli import app
from typer.testing import CliRunner

from tests.support.auth import ADMIN_TOKEN, bearer, principal_token

NO_TOKEN_ENV = {"MLOPS_TOKEN": "", "REGISTRY_ADMIN_TOKEN": ""}


def mlops(registry_url: str, token: str, *argv: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["--token", token, "--registry-url", registry_url, *argv], env=NO_TOKEN_ENV)
    return result.exit_code, result.stdout, result.stderr


def run(registry_url: str, token: str, *argv: str) -> str:
    code, out, err = mlops(registry_url, token, *argv)
    assert code == 0, (code, out, err)
    return out


def test_an_admin_manages_principals_from_the_cli(registry_url: str) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    created = json.loads(run(registry_url, ADMIN_TOKEN, "principals", "create", name, "approver", "--json"))
    assert (created["name"], created["role"], created["kind"]) == (name, "approver", "person")
    token = run(registry_url, ADMIN_TOKEN, "principals", "token", name, "--expires-in-days", "1").strip()
    assert token.startswith("mlops_")
    assert httpx.get(f"{registry_url}/auth/whoami", headers=bearer(token), timeout=30).json()["role"] == "approver"
    listed = json.loads(run(registry_url, ADMIN_TOKEN, "principals", "list", "--json"))
    assert name in [p["name"] for p in listed]
    assert name in run(registry_url, ADMIN_TOKEN, "principals", "list")  # the table
    shown = json.loads(run(registry_url, ADMIN_TOKEN, "principals", "show", name, "--json"))
    (token_id,) = [t["id"] for t in shown["tokens"]]
    assert token.startswith(shown["tokens"][0]["prefix"])
    run(registry_url, ADMIN_TOKEN, "principals", "revoke", name, str(token_id))
    assert httpx.get(f"{registry_url}/auth/whoami", headers=bearer(token), timeout=30).status_code == 401
    disabled = json.loads(run(registry_url, ADMIN_TOKEN, "principals", "disable", name, "--json"))
    assert disabled["disabled_at"]


def test_a_non_admin_gets_the_reason_and_exit_code_1(registry_url: str) -> None:
    _, scientist = principal_token(registry_url, "scientist")
    code, out, err = mlops(registry_url, scientist, "principals", "create", "x", "viewer")
    assert code == 1 and out == ""
    assert "403" in err and "role scientist" in err, err


def test_specs_lists_what_trainer_api_can_retrain(trainer_url: str) -> None:
    result = CliRunner().invoke(app, ["--trainer-url", trainer_url, "--token", ADMIN_TOKEN, "specs", "--json"])
    assert result.exit_code == 0, result.output
    specs = {s["name"]: s for s in json.loads(result.stdout)}
    assert specs["sms-spam"]["task"] == "text-classification" and specs["sms-spam"]["metric"]["name"]


def test_the_token_comes_from_mlops_token_before_registry_admin_token() -> None:
    assert token_from_env({"MLOPS_TOKEN": "mine", "REGISTRY_ADMIN_TOKEN": "admin"}) == "mine"
    assert token_from_env({"MLOPS_TOKEN": "  ", "REGISTRY_ADMIN_TOKEN": "admin"}) == "admin"
    assert token_from_env({}) is None
