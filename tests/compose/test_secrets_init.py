"""secrets-init (docker/secrets-init/secrets_init.py) run as compose runs it, on folders standing in for its
volumes: generated once and kept, overridden by the environment, each service's volume holding exactly its files.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from tests.support.scripts import load_script

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "docker/secrets-init/secrets_init.py"
secrets_init = load_script("docker/secrets-init/secrets_init.py")


@pytest.fixture
def volumes(tmp_path: Path) -> dict[str, Path]:
    out = tmp_path / "out"
    for name in secrets_init.VOLUMES:
        (out / name).mkdir(parents=True)
    return {"store": tmp_path / "secrets", "out": out}


def run(volumes: dict[str, Path], *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in secrets_init.ENV.values()}
    result = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60,
                            env={**clean, "SECRETS_STORE": str(volumes["store"]), "SECRETS_OUT": str(volumes["out"]),
                                 **env})
    assert result.returncode == 0, result.stderr
    return result


def files(volumes: dict[str, Path]) -> dict[str, str]:
    return {str(p.relative_to(volumes["out"])): p.read_text() for p in sorted(volumes["out"].rglob("*"))
            if p.is_file()}


def test_first_start_generates_everything_and_later_starts_keep_it(volumes: dict[str, Path]) -> None:
    first = run(volumes)
    assert first.stderr.count(" generated") == len(secrets_init.ENV)
    written = files(volumes)
    assert set(written) == {f"{v}/{f}" for v, fs in secrets_init.VOLUMES.items() for f in fs}
    kept = {p.name: p.read_text() for p in volumes["store"].iterdir()}
    assert len(set(kept.values())) == len(kept), "every secret is its own random value"
    assert all(len(v) >= 40 for v in kept.values())
    assert stat.S_IMODE(volumes["store"].stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o400 for p in volumes["store"].iterdir())
    # the derived values carry the kept passwords
    url = urlsplit(written["trainer/celery_broker_url"])
    assert (url.username, unquote(url.password), url.hostname, url.port) == (
        "trainer", kept["redis_password_trainer"], "redis", 6379)
    assert written["registry-proxy/registry_database_url"].startswith("postgresql://registry:")
    # the predictors write the served log and the trainer reads it: one database, one role, Postgres' password
    served = urlsplit(written["predictor/served_log_database_url"])
    assert written["trainer/served_log_database_url"] == written["predictor/served_log_database_url"]
    assert (served.username, unquote(served.password or ""), served.hostname, served.port, served.path) == (
        "servedlog", kept["postgres_served_log_password"], "postgres", 5432, "/served_log")
    assert written["postgres/served_log_db_password"] == kept["postgres_served_log_password"]
    assert written["mlflow/mlflow_auth_database_uri"].endswith("@postgres:5432/mlflow_auth")
    assert written["registry-proxy/registry_admin_token"] == kept["registry_admin_token"]
    # Prometheus gets only the password of MLflow's read-only user `prometheus`, the one MLflow provisions
    assert {f for f in written if f.startswith("prometheus/")} == {"prometheus/mlflow_password_prometheus"}
    assert written["prometheus/mlflow_password_prometheus"] == written["mlflow/mlflow_password_prometheus"]
    assert "user default off" in written["redis/users.acl"]
    # restart: nothing generated again, nothing changes
    second = run(volumes)
    assert " generated" not in second.stderr
    assert files(volumes) == written


def test_the_environment_overrides_and_addresses_follow_the_network(volumes: dict[str, Path]) -> None:
    run(volumes)
    before = files(volumes)
    run(volumes, REGISTRY_ADMIN_TOKEN="my own token", REDIS_PASSWORD_PREDICTOR="p@ss:w/rd",
        SERVED_LOG_DB_PASSWORD="served/log pw", REDIS_ADDRESS="127.0.0.1:16379", POSTGRES_ADDRESS="127.0.0.1:15432")
    after = files(volumes)
    assert after["registry-proxy/registry_admin_token"] == "my own token"
    url = urlsplit(after["predictor/redis_url"])
    assert (unquote(url.password), url.hostname, url.port) == ("p@ss:w/rd", "127.0.0.1", 16379)
    assert "@127.0.0.1:15432/registry" in after["registry-proxy/registry_database_url"]
    assert after["postgres/served_log_db_password"] == "served/log pw"
    for volume in ("predictor", "trainer"):
        served = urlsplit(after[f"{volume}/served_log_database_url"])
        assert (served.username, unquote(served.password or ""), served.hostname, served.port, served.path) == (
            "servedlog", "served/log pw", "127.0.0.1", 15432, "/served_log"), volume
    assert after["trainer/registry_service_token"] == before["trainer/registry_service_token"]
    # the given value is kept: without the variable the next start keeps it
    run(volumes)
    assert files(volumes)["registry-proxy/registry_admin_token"] == "my own token"


def test_stale_files_are_removed_and_print_reads_a_secret(volumes: dict[str, Path]) -> None:
    run(volumes)
    (volumes["out"] / "predictor" / "registry_admin_token").write_text("leaked")
    printed = run(volumes, "--print", "registry_admin_token")
    assert not (volumes["out"] / "predictor" / "registry_admin_token").exists()
    assert printed.stdout.strip() == (volumes["out"] / "registry-proxy/registry_admin_token").read_text()
    bad = subprocess.run([sys.executable, str(SCRIPT), "--print", "nope"], capture_output=True, text=True,
                         env={**os.environ, "SECRETS_STORE": str(volumes["store"]),
                              "SECRETS_OUT": str(volumes["out"])}, timeout=60)
    assert bad.returncode == 2 and not bad.stdout
