"""The stack spread over hosts made of network namespaces (tests/hosts/network.py):

========== ============ ==============================================================
host       address      runs
========== ============ ==============================================================
state      10.213.0.2   its own Postgres (initdb'd here), Redis and MLflow (basic auth)
control    10.213.0.3   registry-proxy :8001, trainer-api :8002
edge       10.213.0.4   HAProxy :8000 in front of both predictors; the test's clients
serve-1/2  .11, .12     a predictor each, :8000
train-1/2  .21, .22     a Celery worker each
========== ============ ==============================================================

Every server binds to its host's address and every client connects from a host's namespace, so all traffic
crosses the bridge; nothing listens on or talks to the root namespace. The services are the same commands and
settings as ``scripts/dev.sh`` runs, each with its own MLflow user (tests/support/processes.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg2

from tests.hosts import network
from tests.hosts.network import Host
from tests.support import processes as p
from tests.support.auth import ADMIN_TOKEN, SERVICE_TOKEN, TRAINER_TOKEN
from tests.support.haproxy import config_for, env_for

HOSTS = {"state": 2, "control": 3, "edge": 4, "serve-1": 11, "serve-2": 12, "train-1": 21, "train-2": 22}
PREDICTOR_PORT, REGISTRY_PORT, TRAINER_PORT, MLFLOW_PORT, LB_PORT = 8000, 8001, 8002, 5000, 8000
POLL_SECONDS = 2
MODEL = "hosts-sms"  # the model the predictors serve and the tests retrain
# A worker host that dies hands nothing back: its unacknowledged message returns to the queue once it is older
# than the visibility timeout (the trainer's default is 4 h, longer than the longest job), at the next scan of a
# live worker (kombu scans every 10th tick of 10 s: up to 100 s later). 20 s here, so the redelivery after the
# SIGKILL comes within the test; a task running longer than that is also handed to an idle worker (seen under
# load: both workers trained the same job, which registered one version all the same).
VISIBILITY_TIMEOUT = 20



class Stack:
    """Builds the hosts and starts every process; ``close`` stops them and removes the namespaces."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.hosts = {name: Host(name, number) for name, number in HOSTS.items()}
        self.procs: dict[str, p.Process] = {}
        self.scratch = Path(tempfile.mkdtemp(prefix="mlops-hosts-"))
        self.queue = f"training-{uuid.uuid4().hex[:6]}"
        self.env: dict[str, str] = {}

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    # --- URLs as the other hosts see them
    def url(self, host: str, port: int) -> str:
        return f"http://{self.hosts[host].address}:{port}"

    @property
    def balancer(self) -> str:
        return self.url("edge", LB_PORT)

    @property
    def registry(self) -> str:
        return self.url("control", REGISTRY_PORT)

    @property
    def trainer(self) -> str:
        return self.url("control", TRAINER_PORT)

    def predictor(self, host: str) -> str:
        return self.url(host, PREDICTOR_PORT)

    # --- processes
    def start(self, host: str, name: str, cmd: list[str], env: dict[str, str] | None = None) -> p.Process:
        proc = p.Process(f"{host}-{name}", self.hosts[host].command(*cmd), env or {}, self.log_dir).start()
        self.procs[f"{host}/{name}"] = proc
        return proc

    def wait_http(self, host: str, name: str, url: str, timeout: float = 120) -> None:
        """Waits, from ``host`` itself, until the process answers ``url``."""
        self.hosts[host].run(self.procs[f"{host}/{name}"].wait_http, url, timeout)

    def kill(self, host: str, name: str) -> None:
        """SIGKILL to the process and its children: the host dies without a word."""
        proc = self.procs[f"{host}/{name}"]
        proc.signal(signal.SIGKILL)
        assert proc.proc is not None
        proc.proc.wait(10)

    def restart(self, host: str, name: str) -> p.Process:
        old = self.procs[f"{host}/{name}"]
        return self.start(host, name, old.cmd[4:], old.env)  # cmd[:4] is `ip netns exec <ns>`

    # --- building
    def up(self) -> Stack:
        network.remove_all()  # leftovers of an earlier run that crashed before its finalizer
        network.create_bridge()
        for host in self.hosts.values():
            host.create()
        self._state()
        self._services()
        return self

    def _state(self) -> None:
        state = self.hosts["state"]
        pg_data = self._postgres(state)
        redis_dir = self.scratch / "redis"
        redis_dir.mkdir()
        self.start("state", "redis", ["redis-server", "--bind", state.address, "--port", "6379", "--save", "",
                                      "--protected-mode", "no", "--dir", str(redis_dir)])
        self._wait_postgres(state, pg_data)
        pg = f"postgresql://postgres@{state.address}:5432"
        for db in ("mlflow", "mlflow_auth", "registry"):
            state.run(_create_database, f"{pg}/postgres", db)
        creds = p.new_mlflow_credentials(f"{pg}/mlflow_auth")
        ini = p.write_mlflow_auth_ini(self.scratch / "basic_auth.ini", creds)
        mlflow_uri = self.url("state", MLFLOW_PORT)
        self.start("state", "mlflow", [
            str(p.VENV_BIN / "mlflow"), "server", "--backend-store-uri", f"{pg}/mlflow",
            "--serve-artifacts", "--artifacts-destination", str(self.scratch / "artifacts"),
            "--host", state.address, "--port", str(MLFLOW_PORT), "--workers", "1", "--app-name", "basic-auth",
            "--allowed-hosts", f"{state.address},{state.address}:{MLFLOW_PORT}"],
            {"MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_FLASK_SERVER_SECRET_KEY": creds.flask_secret_key,
             "MLFLOW_AUTH_ADMIN_USERNAME": creds.admin_username, "MLFLOW_AUTH_ADMIN_PASSWORD": creds.admin_password,
             "MLFLOW_BASIC_AUTH_FAIL_CLOSED": "false"})
        self.wait_http("state", "mlflow", f"{mlflow_uri}/health", timeout=600)
        # provision_users.py runs as a child of a thread of `control`, so it reaches MLflow over the bridge.
        self.hosts["control"].run(p.provision_mlflow_users, mlflow_uri, creds, self.log_dir)
        datasets = self.scratch / "datasets"
        datasets.mkdir()
        self.env = {
            "ENVIRONMENT": "test", "MLFLOW_TRACKING_URI": mlflow_uri,
            "REDIS_URL": f"redis://{state.address}:6379/0", "CELERY_BROKER_URL": f"redis://{state.address}:6379/0",
            "CELERY_QUEUE": self.queue, "CELERY_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT),
            "MODEL_EVENTS_CHANNEL": f"mlops:model-events:{self.queue}",
            "REGISTRY_URL": self.registry, "REGISTRY_DATABASE_URL": f"{pg}/registry",
            "REGISTRY_ADMIN_TOKEN": ADMIN_TOKEN, "REGISTRY_SERVICE_TOKEN": SERVICE_TOKEN,
            "TRAINER_API_TOKEN": TRAINER_TOKEN, "DATASETS_DIR": str(datasets), "GIT_PYTHON_REFRESH": "quiet",
            "MODEL_NAME": MODEL, "POLL_INTERVAL_SECONDS": str(POLL_SECONDS),
            p.TEST_PASSWORDS_VAR: json.dumps(dict(creds.passwords)),
        }

    def _postgres(self, state: Host) -> Path:
        """A cluster of its own, initdb'd into a scratch folder as the postgres user, listening on state only."""
        pg_bin = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
        data = self.scratch / "pg"
        data.mkdir()
        shutil.chown(self.scratch, "postgres")
        shutil.chown(data, "postgres")
        as_postgres = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"]
        subprocess.run([*as_postgres, str(pg_bin / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                        "-E", "UTF8", "--no-sync"], check=True, capture_output=True, timeout=120)
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(f"listen_addresses = '{state.address}'\nport = 5432\nunix_socket_directories = '{data}'\n"
                       "max_connections = 300\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n")
        with (data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {network.SUBNET}.0/24 trust\n")
        self.start("state", "postgres", [*as_postgres, str(pg_bin / "postgres"), "-D", str(data)])
        return data

    def _wait_postgres(self, state: Host, data: Path) -> None:
        def ready() -> None:
            deadline = time.monotonic() + 60
            while True:
                try:
                    psycopg2.connect(host=state.address, user="postgres", dbname="postgres",
                                     connect_timeout=2).close()
                    return
                except psycopg2.OperationalError:
                    if time.monotonic() > deadline:
                        tail = self.procs["state/postgres"].log_tail()
                        raise TimeoutError(f"postgres did not start:\n{tail}") from None
                    time.sleep(0.2)
        state.run(ready)

    def _services(self) -> None:
        uvicorn = str(p.VENV_BIN / "uvicorn")
        control = self.hosts["control"].address
        self.start("control", "registry-proxy", [uvicorn, "registry_proxy.main:app", "--host", control,
                                                 "--port", str(REGISTRY_PORT), "--no-access-log"], self.env)
        self.wait_http("control", "registry-proxy", f"{self.registry}/health")
        self.start("control", "trainer-api", [uvicorn, "trainer.api:app", "--host", control,
                                              "--port", str(TRAINER_PORT), "--no-access-log"], self.env)
        for host in ("train-1", "train-2"):
            self.start(host, "worker", self.worker_command(host), self.env)
        for host in ("serve-1", "serve-2"):
            self.start(host, "predictor", [uvicorn, "predictor.main:app", "--host", self.hosts[host].address,
                                           "--port", str(PREDICTOR_PORT), "--no-access-log"], self.env)
        self._balancer()
        self.wait_http("control", "trainer-api", f"{self.trainer}/health")
        for host in ("serve-1", "serve-2"):
            self.wait_http(host, "predictor", f"{self.predictor(host)}/health")
        for host in ("train-1", "train-2"):
            self.hosts["control"].run(self.wait_worker, host)

    def worker_command(self, host: str) -> list[str]:
        return [str(p.VENV_BIN / "celery"), "-A", "trainer.celery_app", "worker", "--loglevel", "INFO",
                "--concurrency", "1", "--queues", self.queue, "--hostname", f"w@{host}"]

    def _balancer(self) -> None:
        """HAProxy on `edge` with the repository's config (docker/haproxy/haproxy.cfg) in front of both predictors."""
        servers = [f"{self.hosts[h].address}:{PREDICTOR_PORT}" for h in ("serve-1", "serve-2")]
        cfg = self.scratch / "haproxy.cfg"
        cfg.write_text(config_for(servers))
        env = env_for(f"{self.hosts['edge'].address}:{LB_PORT}", slots=len(servers))
        check = subprocess.run(["haproxy", "-c", "-f", str(cfg)], env={**os.environ, **env}, capture_output=True,
                               text=True, timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr
        self.start("edge", "haproxy", ["haproxy", "-db", "-f", str(cfg)], env)

    def wait_worker(self, host: str, timeout: float = 120) -> None:
        """Until the worker on ``host`` says it is ready (its log), or raises with the log."""
        proc = self.procs[f"{host}/worker"]
        deadline = time.monotonic() + timeout
        while "ready." not in proc.log_tail(400):
            assert proc.proc is not None
            if proc.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker on {host} did not start:\n{proc.log_tail()}")
            time.sleep(0.3)

    def celery_control(self, *args: str) -> str:
        """``celery control ...`` run from the control host, with the trainer's settings."""
        cmd = self.hosts["control"].command(str(p.VENV_BIN / "celery"), "-A", "trainer.celery_app", "control",
                                            "--timeout", "15", *args)
        env = {**p.inherited_env(), "PATH": f"{p.VENV_BIN}:{os.environ['PATH']}",
               **p.service_credentials(cmd, self.env)}
        done = subprocess.run(cmd, env=env, cwd=p.REPO, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"celery control {args}: {done.stdout}{done.stderr}"
        return done.stdout

    def close(self) -> None:
        for proc in self.procs.values():
            proc.signal(signal.SIGTERM)
        for proc in self.procs.values():
            with contextlib.suppress(Exception):
                proc.stop(timeout=10)
        for host in self.hosts.values():
            host.close()
        network.remove_all()
        shutil.rmtree(self.scratch, ignore_errors=True)


def _create_database(admin_url: str, name: str) -> None:
    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()

