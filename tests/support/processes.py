"""Start and stop the real servers a test needs: Postgres databases, Redis dbs, MLflow, our services.

Every process runs on a free port on 127.0.0.1 with its own log file; every database and Redis db a test
claims is dropped or flushed afterwards, so the suite leaves no state behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg2
import redis

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
PYTHONPATH = os.pathsep.join(
    str(REPO / "services" / part) for part in ("common", "trainer", "registry-proxy", "predictor")
)
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


class Process:
    """A child process with a log file; ``wait_http`` blocks until it answers or raises with its log."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name, self.cmd, self.env = name, cmd, env
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        full_env = {**os.environ, "PYTHONPATH": PYTHONPATH, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", **self.env}
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


def mlflow_server(db_url: str, artifacts_dir: Path, log_dir: Path, port: int | None = None,
                  metrics_dir: Path | None = None) -> tuple[Process, str]:
    """A real ``mlflow server`` over Postgres with proxied artifacts; returns (process, tracking URI)."""
    port = port or free_port()
    cmd = [str(VENV_BIN / "mlflow"), "server", "--backend-store-uri", db_url,
           "--serve-artifacts", "--artifacts-destination", str(artifacts_dir),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    if metrics_dir is not None:
        cmd += ["--expose-prometheus", str(metrics_dir)]
    proc = Process(f"mlflow-{port}", cmd, {}, log_dir).start()
    uri = f"http://127.0.0.1:{port}"
    proc.wait_http(f"{uri}/health", timeout=180)
    return proc, uri


def uvicorn_service(name: str, app: str, env: dict[str, str], log_dir: Path,
                    port: int | None = None) -> tuple[Process, str]:
    """One of our FastAPI services under uvicorn; returns (process, base URL) once /health answers."""
    port = port or free_port()
    cmd = [str(VENV_BIN / "uvicorn"), app, "--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    proc = Process(f"{name}-{port}", cmd, env, log_dir).start()
    url = f"http://127.0.0.1:{port}"
    proc.wait_http(f"{url}/health")
    return proc, url
