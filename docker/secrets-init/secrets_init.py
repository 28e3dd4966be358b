#!/usr/bin/env python3
"""secrets-init: the one-shot service that gives the stack its secrets, before anything else starts.

On the first start it generates every secret at random (or takes the value given in the environment, e.g. from
`.env`) and keeps it in the `secrets` volume, which only this service mounts. On every start it then writes,
into one volume per service, exactly the files that service reads (mounted read-only at /run/secrets/mlops),
derived from the kept values: the passwords and tokens themselves, the database and Redis URLs with their
passwords in them, and Redis' ACL file (docker/redis/users.acl.template, passwords as SHA-256 hashes).

* Kept values survive restarts (`docker compose down` keeps the volumes; `down -v` deletes them, and with them
  the databases those passwords belong to).
* A non-empty environment variable (see ENV below) overrides the kept value and replaces it. Postgres sets its
  roles' passwords only when its volume is initialised: changing a database password later also needs
  ALTER ROLE ... PASSWORD.
* Files a service no longer needs are removed from its volume.

Usage: secrets-init                     generate/keep the secrets, write every service's files
       secrets-init --print NAME        the same, then print the kept value NAME (e.g. registry_admin_token)
Python standard library only, so it runs on any python3 image.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import string
import sys
import tempfile
from pathlib import Path
from urllib.parse import quote

STORE = Path(os.environ.get("SECRETS_STORE", "/secrets"))
OUT = Path(os.environ.get("SECRETS_OUT", "/out"))
HERE = Path(__file__).resolve().parent
# In the image the template sits beside this file; in the repository it is docker/redis/users.acl.template.
ACL_TEMPLATE = Path(os.environ.get("REDIS_ACL_TEMPLATE") or next(
    (p for p in (HERE / "users.acl.template", HERE.parent / "redis" / "users.acl.template") if p.exists()),
    HERE / "users.acl.template"))

# The kept secrets, and the environment variable that overrides each one.
ENV = {
    "postgres_password": "POSTGRES_PASSWORD",
    "postgres_mlflow_password": "MLFLOW_DB_PASSWORD",
    "postgres_registry_password": "REGISTRY_DB_PASSWORD",
    "postgres_served_log_password": "SERVED_LOG_DB_PASSWORD",
    "registry_admin_token": "REGISTRY_ADMIN_TOKEN",
    "registry_service_token": "REGISTRY_SERVICE_TOKEN",
    "trainer_api_token": "TRAINER_API_TOKEN",
    "grafana_admin_password": "GRAFANA_ADMIN_PASSWORD",
    "mlflow_admin_password": "MLFLOW_ADMIN_PASSWORD",
    "mlflow_flask_secret_key": "MLFLOW_FLASK_SECRET_KEY",
    "mlflow_password_registry_proxy": "MLFLOW_PASSWORD_REGISTRY_PROXY",
    "mlflow_password_trainer": "MLFLOW_PASSWORD_TRAINER",
    "mlflow_password_predictor": "MLFLOW_PASSWORD_PREDICTOR",
    "mlflow_password_prometheus": "MLFLOW_PASSWORD_PROMETHEUS",
    "redis_password_registry_proxy": "REDIS_PASSWORD_REGISTRY_PROXY",
    "redis_password_trainer": "REDIS_PASSWORD_TRAINER",
    "redis_password_predictor": "REDIS_PASSWORD_PREDICTOR",
    "redis_password_healthcheck": "REDIS_PASSWORD_HEALTHCHECK",
}

# What each service's volume holds: file name -> the kept secret or derived value it contains. A service's
# compose entry mounts its own volume only, and names these files in its *_FILE variables
# (tests/compose/test_compose_files.py checks both directions).
VOLUMES: dict[str, dict[str, str]] = {
    "postgres": {
        "postgres_password": "postgres_password",
        "mlflow_db_password": "postgres_mlflow_password",
        "registry_db_password": "postgres_registry_password",
        "served_log_db_password": "postgres_served_log_password",
    },
    "redis": {
        "users.acl": "redis_acl",
        "healthcheck_password": "redis_password_healthcheck",
    },
    "mlflow": {
        "mlflow_backend_store_uri": "mlflow_backend_store_uri",
        "mlflow_auth_database_uri": "mlflow_auth_database_uri",
        "mlflow_admin_password": "mlflow_admin_password",
        "mlflow_flask_secret_key": "mlflow_flask_secret_key",
        "mlflow_password_registry_proxy": "mlflow_password_registry_proxy",
        "mlflow_password_trainer": "mlflow_password_trainer",
        "mlflow_password_predictor": "mlflow_password_predictor",
        "mlflow_password_prometheus": "mlflow_password_prometheus",
    },
    "registry-proxy": {
        "registry_database_url": "registry_database_url",
        "registry_admin_token": "registry_admin_token",
        "registry_service_token": "registry_service_token",
        "trainer_api_token": "trainer_api_token",
        "redis_url": "redis_url_registry_proxy",
        "mlflow_tracking_password": "mlflow_password_registry_proxy",
    },
    # The trainer reads the predictors' served log for production:<model> datasets (trainer-api checks the
    # setting when a job is submitted, the workers read the rows).
    "trainer": {
        "served_log_database_url": "served_log_database_url",
        "registry_service_token": "registry_service_token",
        "redis_url": "redis_url_trainer",
        "celery_broker_url": "redis_url_trainer",
        "celery_result_backend": "redis_url_trainer",
        "mlflow_tracking_password": "mlflow_password_trainer",
    },
    "predictor": {
        "served_log_database_url": "served_log_database_url",
        "redis_url": "redis_url_predictor",
        "mlflow_tracking_password": "mlflow_password_predictor",
    },
    # Prometheus scrapes MLflow's /metrics as the read-only MLflow user `prometheus` (basic_auth password_file).
    "prometheus": {
        "mlflow_password_prometheus": "mlflow_password_prometheus",
    },
    "grafana": {
        "grafana_admin_password": "grafana_admin_password",
        "trainer_api_token": "trainer_api_token",
    },
    # Alertmanager calls trainer-api's /alerts/alertmanager with it (http_config.authorization.credentials_file).
    "alertmanager": {
        "trainer_api_token": "trainer_api_token",
    },
}

# Redis users (ACL user name -> kept password).
REDIS_USERS = {
    "registry-proxy": "redis_password_registry_proxy",
    "trainer": "redis_password_trainer",
    "predictor": "redis_password_predictor",
    "healthcheck": "redis_password_healthcheck",
}


def log(message: str) -> None:
    print(f"secrets-init: {message}", file=sys.stderr, flush=True)


def generate() -> str:
    """A fresh random secret: 256 bits, URL- and shell-safe."""
    return secrets.token_urlsafe(32)


def render_acl(passwords: dict[str, str], *, celery_queue: str = "training",
               events_channel: str = "mlops:model-events", predictor_prefix: str = "mlops:predictor",
               template: Path = ACL_TEMPLATE) -> str:
    """Redis' ACL file from the template: ``passwords`` by ACL user name (REDIS_USERS' keys)."""
    for name, value in (("CELERY_QUEUE", celery_queue), ("MODEL_EVENTS_CHANNEL", events_channel),
                        ("REDIS_KEY_PREFIX", predictor_prefix)):
        if not value or any(c.isspace() or c in "*?[]" for c in value):
            raise ValueError(f"{name}={value!r} cannot be used in a Redis ACL rule")
    values = {f"{user.replace('-', '_')}_password": "#" + hashlib.sha256(pw.encode()).hexdigest()
              for user, pw in passwords.items()}
    values |= {"celery_queue": celery_queue, "events_channel": events_channel, "predictor_prefix": predictor_prefix}
    lines = [ln for ln in template.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return "\n".join(string.Template(ln).substitute(values) for ln in lines) + "\n"


def redis_url(user: str, password: str, address: str, db: int = 0) -> str:
    return f"redis://{quote(user, safe='')}:{quote(password, safe='')}@{address}/{db}"


def postgres_url(user: str, password: str, address: str, database: str) -> str:
    return f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@{address}/{database}"


def _write(path: Path, value: str, mode: int) -> None:
    """Atomically: a reader sees the old file or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(value)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def keep(env: dict[str, str]) -> dict[str, str]:
    """The kept secrets: the environment's value where given, else the stored one, else a new random one."""
    STORE.mkdir(parents=True, exist_ok=True)
    os.chmod(STORE, 0o700)
    kept = {}
    for name, var in ENV.items():
        path = STORE / name
        given = env.get(var, "").strip()
        if given:
            if not path.exists() or path.read_text() != given:
                _write(path, given, 0o400)
                log(f"{name} set from {var}")
        elif not path.exists() or not path.read_text():
            _write(path, generate(), 0o400)
            log(f"{name} generated")
        kept[name] = path.read_text()
    return kept


def derive(kept: dict[str, str], env: dict[str, str]) -> dict[str, str]:
    """Every value a service file holds: the kept secrets plus the URLs and the ACL file built from them."""
    pg = env.get("POSTGRES_ADDRESS") or "postgres:5432"
    rd = env.get("REDIS_ADDRESS") or "redis:6379"
    values = dict(kept)
    values["mlflow_backend_store_uri"] = postgres_url("mlflow", kept["postgres_mlflow_password"], pg, "mlflow")
    values["mlflow_auth_database_uri"] = postgres_url("mlflow", kept["postgres_mlflow_password"], pg, "mlflow_auth")
    values["registry_database_url"] = postgres_url("registry", kept["postgres_registry_password"], pg, "registry")
    values["served_log_database_url"] = postgres_url("servedlog", kept["postgres_served_log_password"], pg,
                                                     "served_log")
    for user in ("registry-proxy", "trainer", "predictor"):
        values[f"redis_url_{user.replace('-', '_')}"] = redis_url(user, kept[REDIS_USERS[user]], rd)
    values["redis_acl"] = render_acl(
        {user: kept[name] for user, name in REDIS_USERS.items()},
        celery_queue=env.get("CELERY_QUEUE") or "training",
        events_channel=env.get("MODEL_EVENTS_CHANNEL") or "mlops:model-events",
        predictor_prefix=env.get("REDIS_KEY_PREFIX") or "mlops:predictor",
    )
    return values


def publish(values: dict[str, str]) -> None:
    """Writes each mounted service volume (/out/<service>): its files, and nothing else."""
    for volume, files in VOLUMES.items():
        folder = OUT / volume
        if not folder.is_dir():
            continue  # not mounted: e.g. `--print` run with fewer volumes
        os.chmod(folder, 0o755)
        for name, source in files.items():
            path = folder / name
            if not path.exists() or path.read_text() != values[source]:
                # Readable by the service's own user (uids differ between images); the volume is its alone.
                _write(path, values[source], 0o444)
        for stale in set(os.listdir(folder)) - set(files):
            (folder / stale).unlink()
            log(f"removed {volume}/{stale}, which {volume} no longer uses")


def main(argv: list[str]) -> int:
    env = dict(os.environ)
    kept = keep(env)
    publish(derive(kept, env))
    if argv[:1] == ["--print"] and len(argv) == 2:
        if argv[1] not in kept:
            log(f"no secret named {argv[1]!r}; one of {', '.join(kept)}")
            return 2
        print(kept[argv[1]])
        return 0
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    log(f"{len(kept)} secrets kept in {STORE}; files written for {', '.join(v for v in VOLUMES if (OUT / v).is_dir())}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
