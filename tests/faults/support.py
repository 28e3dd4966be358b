"""Helpers of the fault tests: servers a test may stop (its own Redis, its own MLflow), tiny text models
registered straight into MLflow, a request loop that counts failures, and /metrics and /proc readers."""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import redis

from tests.predictor.models import register, served_version, sms, text_pipeline  # noqa: F401 - re-exported
from tests.support import processes as p
from tests.support.load import HAM, SPAM, Load  # noqa: F401 - re-exported for the suite
from tests.support.registry import copies_of
from tests.support.registry import set_alias as set_production  # noqa: F401 - MLflow only, no event
from tests.support.waiting import wait_for  # noqa: F401 - re-exported for the suite

TEXT_SPEC = {"name": "x", "task": "text-classification",
             "data": {"uri": "data/sms_spam.csv", "text_column": "text", "label_column": "label"},
             "metric": {"name": "f1_macro", "higher_is_better": True, "threshold": 0.5},
             "quality": {"window_size": 50, "feedback_ttl_seconds": 3600}}


class RedisServer:
    """A redis-server of the test's own on a fixed free port, so stopping it breaks nobody else."""

    def __init__(self, log_dir: Path, data_dir: Path, persistent: bool = False) -> None:
        self.port = p.free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
               "--dir", str(data_dir)]
        if persistent:
            cmd += ["--appendonly", "yes", "--appendfsync", "always"]
        self.process = p.Process(f"redis-{self.port}", cmd, {}, log_dir)

    def start(self) -> RedisServer:
        self.process.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):
                conn = redis.Redis.from_url(self.url, socket_connect_timeout=1)
                try:
                    if conn.ping():
                        return self
                finally:
                    conn.close()
            time.sleep(0.1)
        raise TimeoutError(f"redis-server on {self.port} did not start:\n{self.process.log_tail()}")

    def stop(self) -> None:
        self.process.stop()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_connect_timeout=2)


class MlflowServer:
    """An MLflow server of the test's own (own Postgres db, own artifacts), restartable on the same port; with
    MLflow's basic-auth app when given ``credentials`` (kept across restarts)."""

    def __init__(self, db_url: str, artifacts: Path, log_dir: Path,
                 credentials: p.MlflowCredentials | None = None) -> None:
        self.db_url, self.artifacts, self.log_dir, self.credentials = db_url, artifacts, log_dir, credentials
        self.port = p.free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.server: p.MlflowServer | None = None

    @property
    def process(self) -> p.Process | None:
        return self.server.process if self.server is not None else None

    def start(self) -> MlflowServer:
        self.server = p.mlflow_server(self.db_url, self.artifacts, self.log_dir, port=self.port,
                                      auth=self.credentials or False)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


@contextlib.contextmanager
def own_mlflow(log_dir: Path, tmp: Path, credentials: p.MlflowCredentials | None = None) -> Iterator[MlflowServer]:
    """An MLflow server of the test's own. With the session's ``credentials`` it runs MLflow's basic-auth app as
    the session's does, on an auth store of its own (experiment ids would collide in a shared one) holding the
    same admin and service passwords: the test process (MLflow's admin) and the services (each its own MLflow
    user, from the passwords in ``base_env``) talk to it as they talk to the session's."""
    with contextlib.ExitStack() as stack:
        db_url = stack.enter_context(p.postgres_database("mlops_test_faults_mlflow"))
        if credentials is not None:
            auth_db = stack.enter_context(p.postgres_database("mlops_test_faults_mlflow_auth"))
            credentials = dataclasses.replace(credentials, auth_db_url=auth_db)
        server = MlflowServer(db_url, tmp / "artifacts", log_dir, credentials).start()
        try:
            yield server
        finally:
            server.stop()


def register_text_model(mlflow_uri: str, name: str, versions: int = 1) -> list[str]:
    """Logs one small sms-spam classifier and registers it ``versions`` times (same artifacts)."""
    texts, labels = sms(400)
    model = text_pipeline(texts, labels)
    first = register(mlflow_uri, name, model, pd.DataFrame({"text": texts[:3]}), "text-classification",
                     texts, model.predict(texts), TEXT_SPEC)
    return [first, *copies_of(mlflow_uri, name, first, versions - 1)]


def stop_all(processes: list[p.Process]) -> None:
    """SIGTERM to every process at once, then wait for each (a sequential stop waits on each one in turn)."""
    for proc in processes:
        proc.signal(signal.SIGTERM)
    for proc in processes:
        proc.stop()


def metric_sum(url: str, name: str, **labels: str) -> float:
    """Sum of every sample of ``name`` on /metrics whose labels include ``labels``."""
    total = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if not (line.startswith(name + "{") or line.startswith(name + " ")):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def rss_bytes(pid: int) -> int:
    """Resident memory of the process and all its descendants (e.g. the predictor's model-loader process)."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
    return total
