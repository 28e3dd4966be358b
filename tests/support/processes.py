"""Start and stop the real servers a test needs: Postgres databases, Redis dbs, MLflow, our services.

Every process runs on a free port on 127.0.0.1 with its own log file; every database and Redis db a test
claims is dropped or flushed afterwards, so the suite leaves no state behind.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg2
import redis

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_ADMIN_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pg_base() -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0]


@contextlib.contextmanager
def postgres_database(prefix: str = "mlops_test") -> Iterator[str]:
    """A fresh, empty Postgres database for the duration of the block; yields its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(PG_ADMIN_URL)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield f"{_pg_base()}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@contextlib.contextmanager
def redis_database() -> Iterator[str]:
    """Claim an unused Redis db number (1-15) for the block, flush it afterwards; yields its URL."""
    claim_key = "mlops-test:claimed"
    for db in range(1, 16):
        conn = redis.Redis.from_url(f"{REDIS_ADMIN_URL}/{db}")
        if conn.dbsize() == 0 and conn.set(claim_key, os.getpid(), nx=True, ex=3600):
            try:
                yield f"{REDIS_ADMIN_URL}/{db}"
            finally:
                conn.flushdb()
                conn.close()
            return
        conn.close()
    raise RuntimeError("no free Redis db among 1-15: another test run holds them all")


# The test process talks to MLflow as its admin; a child never inherits that: each of our services gets its own
# MLflow user, picked from MLOPS_TEST_MLFLOW_PASSWORDS (a JSON object user → password that tests/conftest.py
# puts in the services' environment) by what the command runs.
MLFLOW_CREDENTIAL_VARS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
# MLflow's fluent API writes the test process's own choices into os.environ for subprocesses to inherit
# (set_tracking_uri, set_registry_uri, set_experiment, start_run): a child of ours must not inherit them.
MLFLOW_CLIENT_STATE_VARS = (*MLFLOW_CREDENTIAL_VARS, "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI",
                            "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID")
TEST_PASSWORDS_VAR = "MLOPS_TEST_MLFLOW_PASSWORDS"
SERVICE_OF_COMMAND = (("registry_proxy.", "registry-proxy"), ("trainer.", "trainer"), ("predictor.", "predictor"))


def inherited_env() -> dict[str, str]:
    """The test process's environment without its MLflow client state: what every child starts from."""
    return {k: v for k, v in os.environ.items() if k not in MLFLOW_CLIENT_STATE_VARS}


def service_credentials(cmd: list[str], env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with the MLflow user of the service ``cmd`` starts in place of the test passwords variable."""
    out = {k: v for k, v in env.items() if k != TEST_PASSWORDS_VAR}
    passwords = json.loads(env.get(TEST_PASSWORDS_VAR) or "{}")
    if not passwords or "MLFLOW_TRACKING_USERNAME" in env:
        return out
    user = next((u for prefix, u in SERVICE_OF_COMMAND for arg in cmd if arg.startswith(prefix)), None)
    if user is not None:
        out.update({"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": passwords[user]})
    return out


class Process:
    """A child process with a log file; ``wait_http`` blocks until it answers or raises with its log."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name, self.cmd, self.env = name, cmd, env
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        full_env = {**inherited_env(), "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
                    **service_credentials(self.cmd, self.env)}
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.cmd, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                                     cwd=REPO, start_new_session=True)
        return self

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_http(self, url: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2).status_code < 500:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} did not answer {url} within {timeout}s:\n{self.log_tail()}")

    def signal(self, sig: int) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 15) -> None:
        if not self.proc or self.proc.poll() is not None:
            return
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.proc.wait(5)


MLFLOW_SERVICE_USERS = ("registry-proxy", "trainer", "predictor", "prometheus")  # prometheus: reads /metrics
PROVISION_USERS = REPO / "docker" / "mlflow" / "provision_users.py"


@dataclass(frozen=True)
class MlflowCredentials:
    """Who may talk to an authenticated test MLflow: its admin and one user per service. Passwords stay out of
    ``repr`` so an assertion message or a traceback never shows one."""

    auth_db_url: str
    admin_username: str
    admin_password: str = field(repr=False)
    flask_secret_key: str = field(repr=False)
    passwords: Mapping[str, str] = field(repr=False)  # service user (see MLFLOW_SERVICE_USERS) -> password

    def basic_auth(self, user: str) -> tuple[str, str]:
        """(username, password) for httpx's ``auth=``; ``user`` is a service user or the admin's name."""
        return user, self.admin_password if user == self.admin_username else self.passwords[user]

    def env(self, user: str) -> dict[str, str]:
        """MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD for one user, to merge into a process's env."""
        username, password = self.basic_auth(user)
        return {"MLFLOW_TRACKING_USERNAME": username, "MLFLOW_TRACKING_PASSWORD": password}


def new_mlflow_credentials(auth_db_url: str) -> MlflowCredentials:
    return MlflowCredentials(auth_db_url=auth_db_url, admin_username="admin",
                             admin_password=secrets.token_urlsafe(24), flask_secret_key=secrets.token_hex(32),
                             passwords={user: secrets.token_urlsafe(24) for user in MLFLOW_SERVICE_USERS})


def write_mlflow_auth_ini(path: Path, creds: MlflowCredentials) -> Path:
    """The basic-auth app's config (read by configparser: a literal ``%`` is written ``%%``), mode 600."""
    def value(text: str) -> str:
        return text.replace("%", "%%")
    path.touch(mode=0o600)
    path.write_text("[mlflow]\ndefault_permission = READ\n"
                    f"database_uri = {value(creds.auth_db_url)}\n"
                    f"admin_username = {value(creds.admin_username)}\n"
                    f"admin_password = {value(creds.admin_password)}\n"
                    "auth_cache_ttl_seconds = 60\n")
    return path


def provision_mlflow_users(uri: str, creds: MlflowCredentials, log_dir: Path, timeout: float = 180) -> None:
    """Runs docker/mlflow/provision_users.py as the admin for every service user; passwords travel in env vars
    (never on a command line) and its output goes to a log file."""
    env = {**inherited_env(), **creds.env(creds.admin_username)}
    args = [sys.executable, str(PROVISION_USERS), "--tracking-uri", uri, "--manager", "registry-proxy",
            "--experiment-writer", "trainer", "--timeout", str(int(timeout))]
    for user in MLFLOW_SERVICE_USERS:
        var = "MLOPS_TEST_MLFLOW_PASSWORD_" + user.upper().replace("-", "_")
        env[var] = creds.passwords[user]
        args += ["--user", f"{user}=env:{var}"]
    log_path = log_dir / f"mlflow-provision-{uri.rsplit(':', 1)[-1]}.log"
    with log_path.open("ab") as log:
        done = subprocess.run(args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, timeout=timeout + 120)
    if done.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-5:])
        raise RuntimeError(f"provision_users.py failed ({done.returncode}):\n{tail}")


@dataclass
class MlflowServer:
    """What ``mlflow_server`` returns. It unpacks like the old ``(process, uri)`` tuple; ``credentials`` is set
    when the server runs with authentication. ``stop()`` (or leaving a ``with`` block) stops the server and drops
    what it created (the auth database, the config file); ``process.stop()`` alone only stops the server, so a test
    can restart it with ``mlflow_server(..., auth=server.credentials)``."""

    process: Process
    uri: str
    credentials: MlflowCredentials | None = None
    _cleanup: contextlib.ExitStack = field(default_factory=contextlib.ExitStack, repr=False)

    def __iter__(self) -> Iterator[Process | str]:
        return iter((self.process, self.uri))

    def stop(self) -> None:
        try:
            self.process.stop()
        finally:
            self._cleanup.close()

    def __enter__(self) -> MlflowServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def mlflow_server(db_url: str, artifacts_dir: Path, log_dir: Path, port: int | None = None,
                  metrics_dir: Path | None = None, auth: bool | MlflowCredentials = False) -> MlflowServer:
    """A real ``mlflow server`` over Postgres with proxied artifacts; unpacks as (process, tracking URI).

    ``auth=True``: MLflow's basic-auth app on a fresh Postgres auth database, with a generated admin password and
    Flask secret key, and the users of MLFLOW_SERVICE_USERS provisioned by docker/mlflow/provision_users.py with
    generated passwords (``.credentials``). ``auth=<MlflowCredentials>`` restarts on that same auth store."""
    port = port or free_port()
    cmd = [str(VENV_BIN / "mlflow"), "server", "--backend-store-uri", db_url,
           "--serve-artifacts", "--artifacts-destination", str(artifacts_dir),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    if metrics_dir is not None:
        cmd += ["--expose-prometheus", str(metrics_dir)]
    cleanup = contextlib.ExitStack()
    atexit.register(cleanup.close)  # a safety net when a test forgets stop(); closing twice is harmless
    creds: MlflowCredentials | None = None
    # MLflow's job runner (a huey consumer pool for its GenAI jobs) is not used by this stack; the image turns it
    # off too (docker/mlflow/entrypoint.sh). Five idle processes less per server.
    env: dict[str, str] = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    try:
        if auth:
            if isinstance(auth, MlflowCredentials):
                creds = auth
            else:
                creds = new_mlflow_credentials(cleanup.enter_context(postgres_database("mlops_test_mlflow_auth")))
            config_dir = Path(tempfile.mkdtemp(prefix="mlflow-auth-"))
            cleanup.callback(shutil.rmtree, config_dir, True)
            ini = write_mlflow_auth_ini(config_dir / "basic_auth.ini", creds)
            cmd += ["--app-name", "basic-auth"]
            # The variables too, so that stray MLFLOW_AUTH_ADMIN_* in the caller's environment cannot override the ini.
            env |= {"MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_FLASK_SERVER_SECRET_KEY": creds.flask_secret_key,
                   "MLFLOW_AUTH_ADMIN_USERNAME": creds.admin_username,
                   "MLFLOW_AUTH_ADMIN_PASSWORD": creds.admin_password,
                   # as docker/mlflow/entrypoint.sh: a logged-in user may read routes MLflow has no rule for
                   # (its /metrics, for Prometheus); every registry and tracking route keeps its own rule.
                   "MLFLOW_BASIC_AUTH_FAIL_CLOSED": "false"}
        proc = Process(f"mlflow-{port}", cmd, env, log_dir).start()
        server = MlflowServer(proc, f"http://127.0.0.1:{port}", creds, cleanup)
        cleanup.callback(proc.stop)
        proc.wait_http(f"{server.uri}/health", timeout=180)
        if creds is not None:
            provision_mlflow_users(server.uri, creds, log_dir)
    except BaseException:
        cleanup.close()
        raise
    return server


def uvicorn_service(name: str, app: str, env: dict[str, str], log_dir: Path,
                    port: int | None = None) -> tuple[Process, str]:
    """One of our FastAPI services under uvicorn; returns (process, base URL) once /health answers."""
    port = port or free_port()
    cmd = [str(VENV_BIN / "uvicorn"), app, "--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    proc = Process(f"{name}-{port}", cmd, env, log_dir).start()
    url = f"http://127.0.0.1:{port}"
    proc.wait_http(f"{url}/health")
    return proc, url
