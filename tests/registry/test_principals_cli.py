"""The `mlops principals` commands against the real registry-proxy: an admin creates a person, gives them a
token (printed once), lists, revokes; the revoked token is refused; a non-admin's call fails with the reason."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.support.auth import ADMIN_TOKEN, bearer, principal_token
from trainer import cli


def run(capsys: pytest.CaptureFixture[str], registry_url: str, token: str, *argv: str) -> str:
    assert cli.main(["--token", token, "principals", *argv, "--registry-url", registry_url]) == 0
    return capsys.readouterr().out


def test_an_admin_manages_principals_from_the_cli(registry_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    run(capsys, registry_url, ADMIN_TOKEN, "create", name, "approver")
    token = run(capsys, registry_url, ADMIN_TOKEN, "token", name, "--expires-in-days", "1").strip()
    assert token.startswith("mlops_")
    assert httpx.get(f"{registry_url}/auth/whoami", headers=bearer(token), timeout=30).json()["role"] == "approver"
    assert any(line.split()[0] == name for line in run(capsys, registry_url, ADMIN_TOKEN, "list").splitlines())
    token_id = httpx.get(f"{registry_url}/principals/{name}", headers=bearer(ADMIN_TOKEN),
                         timeout=30).json()["tokens"][0]["id"]
    run(capsys, registry_url, ADMIN_TOKEN, "revoke", name, "--token-id", str(token_id))
    assert httpx.get(f"{registry_url}/auth/whoami", headers=bearer(token), timeout=30).status_code == 401


def test_a_non_admin_gets_the_reason(registry_url: str) -> None:
    _, scientist = principal_token(registry_url, "scientist")
    with pytest.raises(SystemExit, match="error 403: .*role scientist"):
        cli.main(["--token", scientist, "principals", "create", "x", "viewer", "--registry-url", registry_url])
