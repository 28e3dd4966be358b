"""Secrets from files (Docker's ``_FILE`` convention) and the refusal of placeholders outside development."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from registry_proxy.settings import RegistrySettings


def test_a_secret_is_read_from_the_file_named_by_its_FILE_variable(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "registry_admin_token"
    secret.write_text("s3cr3t-from-a-file\n")
    monkeypatch.setenv("REGISTRY_ADMIN_TOKEN_FILE", str(secret))
    monkeypatch.setenv("REGISTRY_ADMIN_TOKEN", "")  # compose passes unset variables as empty strings
    assert RegistrySettings(_env_file=None).registry_admin_token == "s3cr3t-from-a-file"


def test_a_plain_variable_wins_over_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "token"
    secret.write_text("from-file")
    monkeypatch.setenv("REGISTRY_ADMIN_TOKEN_FILE", str(secret))
    monkeypatch.setenv("REGISTRY_ADMIN_TOKEN", "from-env")
    assert RegistrySettings(_env_file=None).registry_admin_token == "from-env"


def test_a_missing_secret_file_is_an_error_that_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REGISTRY_ADMIN_TOKEN", raising=False)
    monkeypatch.setenv("REGISTRY_ADMIN_TOKEN_FILE", "/nonexistent/registry_admin_token")
    with pytest.raises(ValueError, match="REGISTRY_ADMIN_TOKEN_FILE=/nonexistent/registry_admin_token"):
        RegistrySettings(_env_file=None)


def test_production_refuses_placeholder_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REGISTRY_ADMIN_TOKEN", "REGISTRY_SERVICE_TOKEN", "TRAINER_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(f"{name}_FILE", raising=False)
    monkeypatch.setenv("ENVIRONMENT", "production")
    with pytest.raises(ValidationError, match="REGISTRY_ADMIN_TOKEN"):
        RegistrySettings(_env_file=None)


@pytest.mark.parametrize(("environment", "setting", "open_reads"),
                         [("local", None, True), ("test", None, True), ("production", None, False),
                          ("production", "true", True), ("local", "false", False)])
def test_reads_are_open_only_in_development_unless_set(environment: str, setting: str | None, open_reads: bool,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REGISTRY_ADMIN_TOKEN", "REGISTRY_SERVICE_TOKEN", "TRAINER_API_TOKEN"):
        monkeypatch.setenv(name, "a-real-secret")
    monkeypatch.setenv("ENVIRONMENT", environment)
    if setting is None:
        monkeypatch.delenv("AUTH_OPEN_READS", raising=False)
    else:
        monkeypatch.setenv("AUTH_OPEN_READS", setting)
    assert RegistrySettings(_env_file=None).open_reads is open_reads
