"""The stack's Redis ACL, proved on a real redis-server: the ACL file is rendered by the same code and template
as in compose (docker/secrets-init/secrets_init.py, docker/redis/users.acl.template), then every user does what
its service needs and is refused what it must not do, and a real Celery worker and client on the trainer
user's URL run a task, a chord and the workers' healthcheck (`celery inspect ping`) without a single denial.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from shutil import which

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support import processes as p
from tests.support.scripts import load_script

REPO = Path(__file__).resolve().parents[2]
QUEUE = "training"  # the defaults compose renders the ACL with
CHANNEL = "mlops:model-events"
PREFIX = "mlops:predictor"
INSPECTOR = "acl-inspector"  # added by this test only, to read ACL LOG
# redis-py retries an AuthenticationError (a ConnectionError) three times with backoff: 4-11 s per refusal.
NO_RETRY = Retry(NoBackoff(), 0)


secrets_init = load_script("docker/secrets-init/secrets_init.py")


@dataclass
class Server:
    port: int
    passwords: dict[str, str]

    def client(self, user: str, password: str | None = None) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, username=user,
                           password=self.passwords[user] if password is None else password, socket_timeout=10,
                           retry=NO_RETRY)

    def url(self, user: str) -> str:
        return secrets_init.redis_url(user, self.passwords[user], f"127.0.0.1:{self.port}")

    def denials(self, user: str) -> list[dict]:
        return [e for e in self.client(INSPECTOR).acl_log() if e.get("username") == user]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, log_dir: Path) -> Iterator[Server]:
    if not which("redis-server"):
        pytest.skip("redis-server is not installed")
    folder = tmp_path_factory.mktemp("redis-acl")
    passwords = {user: secrets_init.generate() for user in secrets_init.REDIS_USERS}
    acl = secrets_init.render_acl(passwords, celery_queue=QUEUE, events_channel=CHANNEL, predictor_prefix=PREFIX)
    passwords[INSPECTOR] = secrets_init.generate()
    (folder / "users.acl").write_text(acl + f"user {INSPECTOR} on >{passwords[INSPECTOR]} ~* &* +@all\n")
    port = p.free_port()
    proc = p.Process(f"redis-acl-{port}", ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                           "--aclfile", str(folder / "users.acl"), "--save", "",
                                           "--appendonly", "no", "--dir", str(folder)], {}, log_dir).start()
    srv = Server(port, passwords)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                assert srv.client("healthcheck").ping()
                break
            except redis.ConnectionError:
                if proc.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start:\n{proc.log_tail()}") from None
                time.sleep(0.1)
        yield srv
    finally:
        proc.stop()


def refused(call, *args, **kwargs) -> bool:
    try:
        call(*args, **kwargs)
    except (redis.exceptions.NoPermissionError, redis.exceptions.AuthenticationError):
        return True
    except redis.exceptions.ResponseError as exc:
        return str(exc).startswith(("NOPERM", "NOAUTH", "WRONGPASS"))
    return False


def test_the_acl_file_holds_hashes_not_passwords() -> None:
    passwords = {user: secrets_init.generate() for user in secrets_init.REDIS_USERS}
    acl = secrets_init.render_acl(passwords)
    assert not any(pw in acl for pw in passwords.values())
    assert "user default off" in acl and ">" not in acl and "nopass" not in acl
    assert {line.split()[1] for line in acl.splitlines()} == {"default", *secrets_init.REDIS_USERS}


def test_no_anonymous_access_and_no_wrong_password(server: Server) -> None:
    anonymous = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=5, retry=NO_RETRY)
    assert refused(anonymous.ping)
    assert refused(anonymous.get, "trainer:jobs")
    assert refused(anonymous.publish, CHANNEL, "x")
    assert refused(server.client("default", "").ping)
    assert refused(server.client("trainer", "not-the-password").ping)
    assert refused(server.client("predictor", server.passwords["trainer"]).ping)


def test_healthcheck_can_only_ping(server: Server) -> None:
    health = server.client("healthcheck")
    assert health.ping()
    assert refused(health.get, "trainer:jobs")
    assert refused(health.publish, CHANNEL, "x")
    assert refused(health.info)


def test_registry_proxy_publishes_events_and_touches_no_key(server: Server) -> None:
    proxy = server.client("registry-proxy")
    assert proxy.ping()
    proxy.publish(CHANNEL, "{}")
    server.client("trainer").set("trainer:job:secret", "x")
    assert refused(proxy.get, "trainer:job:secret")
    assert refused(proxy.hgetall, "trainer:job:secret")
    assert refused(proxy.set, "mlops:predictor:x", "1")
    assert refused(proxy.lpush, QUEUE, "{}")
    assert refused(proxy.publish, "some-other-channel", "x")
    assert refused(proxy.keys, "*")


def test_predictor_keeps_its_feedback_and_follows_events(server: Server) -> None:
    predictor = server.client("predictor")
    assert predictor.set(f"{PREFIX}:fb:req-1:0", "1", nx=True, ex=60)
    assert predictor.get(f"{PREFIX}:fb:req-1:0") == b"1"
    pipe = predictor.pipeline(transaction=True)  # the quality window, as predictor.feedback writes it
    pipe.lpush(f"{PREFIX}:quality", "1").ltrim(f"{PREFIX}:quality", 0, 99).lrange(f"{PREFIX}:quality", 0, -1)
    assert pipe.execute()[2] == [b"1"]
    # it receives what registry-proxy publishes
    pubsub = predictor.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(CHANNEL)
    server.client("registry-proxy").publish(CHANNEL, "promoted")
    deadline = time.monotonic() + 5
    message = None
    while message is None and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=1)
    pubsub.close()
    assert message and message["data"] == b"promoted"
    # and nothing else
    assert refused(predictor.lpush, QUEUE, "{}"), "the predictor must not enqueue training jobs"
    assert refused(predictor.publish, CHANNEL, "forged")
    assert refused(predictor.get, "trainer:job:secret")
    assert refused(predictor.get, "celery-task-meta-x")
    assert refused(predictor.set, "other:key", "1")
    assert refused(predictor.keys, "*")
    assert refused(predictor.flushall)


def test_trainer_keeps_jobs_but_not_the_predictors_keys(server: Server) -> None:
    trainer = server.client("trainer")
    trainer.hset("trainer:job:1", mapping={"status": '"queued"'})
    trainer.zadd("trainer:jobs", {"1": 1.0})
    assert trainer.hget("trainer:job:1", "status") == b'"queued"'
    assert trainer.llen(QUEUE) == 0  # trainer-api's queue-depth metric
    assert refused(trainer.get, f"{PREFIX}:fb:req-1:0")
    assert refused(trainer.publish, CHANNEL, "forged")
    assert refused(trainer.flushdb)
    assert refused(trainer.config_get, "*")
    assert refused(trainer.keys, "*")
    assert refused(server.client("trainer").acl_list)


PROBE = textwrap.dedent("""
    # The trainer's own Celery application (broker, result backend, queues, acks) with two cheap tasks.
    from celery import chord
    from trainer.celery_app import app

    @app.task(name="trainer.acl_probe_double")
    def double(x):
        return 2 * x

    @app.task(name="trainer.acl_probe_total")
    def total(values):
        return sum(values)

    def run():
        assert double.delay(21).get(timeout=90) == 42
        assert chord([double.si(1), double.si(2)], total.s()).apply_async().get(timeout=90) == 6
        print("probe ok")
""")


@pytest.mark.slow
def test_a_celery_worker_and_client_run_tasks_as_the_trainer_user(server: Server, tmp_path: Path,
                                                                  log_dir: Path) -> None:
    (tmp_path / "acl_probe.py").write_text(PROBE)
    server.client(INSPECTOR).acl_log_reset()  # the other tests' deliberate refusals
    url = server.url("trainer")
    env = {"ENVIRONMENT": "test", "REDIS_URL": url, "CELERY_BROKER_URL": url, "CELERY_RESULT_BACKEND": url,
           "CELERY_QUEUE": QUEUE, "DATASETS_DIR": str(tmp_path / "datasets"), "GIT_PYTHON_REFRESH": "quiet"}
    node = f"acl-probe-{server.port}@localhost"
    # as trainer-worker runs it (docker-compose.yml): prefork, one job at a time, acks late
    worker = p.Process(f"celery-acl-{server.port}", [
        str(p.VENV_BIN / "celery"), "--workdir", str(tmp_path), "-A", "acl_probe", "worker", "--loglevel", "INFO",
        "--hostname", node, "--queues", QUEUE, "--concurrency", "1"], env, log_dir).start()
    full_env = {**os.environ, **env, "PATH": f"{p.VENV_BIN}:{os.environ['PATH']}"}
    try:
        deadline = time.monotonic() + 120
        while not (worker.log_path.exists() and b" ready." in worker.log_path.read_bytes()):
            assert worker.proc.poll() is None, worker.log_tail()
            assert time.monotonic() < deadline, f"the worker did not get ready:\n{worker.log_tail()}"
            time.sleep(0.5)
        client = subprocess.run([sys.executable, "-c", "import acl_probe; acl_probe.run()"], env=full_env,
                                capture_output=True, text=True, timeout=180, cwd=tmp_path)
        assert client.returncode == 0 and "probe ok" in client.stdout, client.stderr[-3000:] + worker.log_tail()
        # the workers' healthcheck and compose-check's ping
        ping = subprocess.run([str(p.VENV_BIN / "celery"), "-A", "acl_probe", "inspect", "ping", "--timeout", "20",
                               "--destination", node], env=full_env, capture_output=True, text=True, timeout=90,
                              cwd=tmp_path)
        assert ping.returncode == 0 and "pong" in ping.stdout, ping.stdout + ping.stderr[-3000:]
        # trainer-beat's healthcheck
        assert redis.Redis.from_url(url, socket_timeout=5).ping()
    finally:
        worker.stop(timeout=30)
    # Celery swallows some errors (gossip, mingle, result consumers): nothing at all may have been denied.
    assert server.denials("trainer") == [], server.denials("trainer")
    log = worker.log_tail(400)
    assert "NOPERM" not in log and "NoPermission" not in log, log


def _start_redis(folder: Path, port: int, log_dir: Path, name: str) -> p.Process:
    proc = p.Process(name, ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--aclfile",
                            str(folder / "users.acl"), "--save", "", "--appendonly", "yes", "--appendfsync",
                            "always", "--dir", str(folder)], {}, log_dir).start()
    return proc


def _wait_ping(client: redis.Redis, proc: p.Process) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            assert client.ping()
            return
        except redis.ConnectionError:
            if proc.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start:\n{proc.log_tail()}") from None
            time.sleep(0.1)


def test_transactions_survive_a_restart_with_the_append_only_file(tmp_path: Path, log_dir: Path) -> None:
    """Redis replays its append-only file as the default user and re-checks each MULTI/EXEC against that user's
    permissions (redis/redis#14541): the stack's ACL keeps the default user off but permitted, so job records,
    kombu's bindings and the predictor's feedback (all written in transactions) are still there after a restart."""
    if not which("redis-server"):
        pytest.skip("redis-server is not installed")
    passwords = {user: secrets_init.generate() for user in secrets_init.REDIS_USERS}
    (tmp_path / "users.acl").write_text(secrets_init.render_acl(
        passwords, celery_queue=QUEUE, events_channel=CHANNEL, predictor_prefix=PREFIX))
    port = p.free_port()
    srv = Server(port, passwords)
    proc = _start_redis(tmp_path, port, log_dir, f"redis-aof-{port}")
    try:
        _wait_ping(srv.client("healthcheck"), proc)
        with srv.client("trainer").pipeline(transaction=True) as pipe:
            pipe.hset("trainer:job:j1", mapping={"status": "succeeded", "stage": "done"}).sadd("trainer:jobs", "j1")
            pipe.execute()
        with srv.client("predictor").pipeline(transaction=True) as pipe:
            pipe.lpush(f"{PREFIX}:window", "1").ltrim(f"{PREFIX}:window", 0, 99).execute()
    finally:
        proc.stop()
    proc = _start_redis(tmp_path, port, log_dir, f"redis-aof-{port}-again")
    try:
        _wait_ping(srv.client("healthcheck"), proc)
        assert srv.client("trainer").hgetall("trainer:job:j1") == {b"status": b"succeeded", b"stage": b"done"}
        assert srv.client("trainer").smembers("trainer:jobs") == {b"j1"}
        assert srv.client("predictor").lrange(f"{PREFIX}:window", 0, -1) == [b"1"]
    finally:
        proc.stop()
