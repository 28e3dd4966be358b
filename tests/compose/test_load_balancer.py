"""The predictors' load balancer (docker/haproxy/haproxy.cfg, compose service predictor-lb), run for real: Debian's
haproxy with the repository's config, the DNS-discovered server slots replaced by two backends on localhost
(the only change), under load while one backend is killed.

The backends are small HTTP servers (lb_backend.py) rather than predictors: what is tested is HAProxy's health
checks, retries and redispatch, and a killed stand-in fails exactly as a killed predictor does (refused and
reset connections).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.haproxy import config_for, env_for
from tests.support.processes import free_port

REPO = Path(__file__).resolve().parents[2]
BACKEND = Path(__file__).with_name("lb_backend.py")
pytestmark = pytest.mark.skipif(not shutil.which("haproxy"),
                                reason="haproxy is not installed (apt-get install haproxy)")


class Stack:
    def __init__(self, tmp: Path, ready: bool) -> None:
        self.tmp, self.ready = tmp, ready
        self.ports = [free_port(), free_port()]
        self.lb_port = free_port()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def log(self, name: str) -> list[str]:
        path = self.tmp / f"{name}.log"
        return path.read_text().splitlines() if path.exists() else []

    def start(self) -> None:
        for name, port in zip(("p1", "p2"), self.ports, strict=True):
            ready = "1" if self.ready else "0"
            self.procs[name] = subprocess.Popen(
                [sys.executable, str(BACKEND), name, str(port), ready, str(self.tmp / f"{name}.log")])
        cfg = self.tmp / "haproxy.cfg"
        cfg.write_text(config_for([f"127.0.0.1:{port}" for port in self.ports]))
        env = {**os.environ, **env_for(f"127.0.0.1:{self.lb_port}", slots=2)}
        check = subprocess.run(["haproxy", "-c", "-f", str(cfg)], env=env, capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        self.procs["haproxy"] = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], env=env,
                                                 stdout=(self.tmp / "haproxy.out").open("wb"), stderr=subprocess.STDOUT)
        # both backends checked and in service
        deadline = time.monotonic() + 20
        seen: set[str] = set()
        while seen != {"p1", "p2"}:
            assert time.monotonic() < deadline, (self.tmp / "haproxy.out").read_text()
            try:
                seen.add(httpx.post(self.url("/predict"), json={}, timeout=5).json()["backend"])
            except (httpx.HTTPError, KeyError, ValueError):
                time.sleep(0.2)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.lb_port}{path}"

    def kill(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait(5)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path, ready=True)
    try:
        s.start()
        yield s
    finally:
        s.stop()


def test_a_backend_killed_under_load_fails_no_request(stack: Stack) -> None:
    results: Counter[str] = Counter()
    failures: list[str] = []
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(timeout=10) as http:
            while not stop.is_set():
                try:  # 20 ms per request: several are always in flight on each backend
                    r = http.post(stack.url("/predict"), json={"instances": ["hi"]}, headers={"x-delay": "0.02"})
                    if r.status_code == 200:
                        results[r.json()["backend"]] += 1
                    else:
                        failures.append(f"{r.status_code} {r.text[:200]}")
                except httpx.HTTPError as e:
                    failures.append(repr(e))

    def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout  # generous: the machine may be busy
        while not condition():
            assert time.monotonic() < deadline, f"{what}: {results}, failures {failures[:5]}"
            time.sleep(0.1)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: results["p1"] >= 20 and results["p2"] >= 20, "both backends serve")
        stack.kill("p1")
        time.sleep(0.5)  # answers p1 sent before it died are counted by now
        at_kill = Counter(results)
        started = time.monotonic()
        # past HAProxy's health checks (every 2 s, down after 2 failures) and well beyond
        wait_for(lambda: results["p2"] - at_kill["p2"] >= 100 and time.monotonic() - started > 5, "p2 serves alone")
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    assert failures == [], failures[:5]
    assert results["p1"] == at_kill["p1"], results
    # requests in flight on p1 when it died were received by p1 and then answered by p2 (sent again)
    received_p1 = len(stack.log("p1"))
    assert received_p1 > results["p1"], (received_p1, results)


def test_a_non_idempotent_request_is_not_sent_twice(stack: Stack) -> None:
    """POST /feedback in flight on a replica that dies fails (502) rather than being delivered again."""
    with httpx.Client(timeout=10) as http:
        pending: dict[str, httpx.Response] = {}
        sender = threading.Thread(target=lambda: pending.setdefault("r", http.post(
            stack.url("/feedback"), json={"request_id": "r-1", "label": "spam"}, headers={"x-delay": "3"})))
        sender.start()
        deadline = time.monotonic() + 5
        while not any("/feedback" in line for name in ("p1", "p2") for line in stack.log(name)):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        (got,) = [name for name in ("p1", "p2") if any("/feedback" in line for line in stack.log(name))]
        other = "p2" if got == "p1" else "p1"
        stack.kill(got)
        sender.join(10)
    assert pending["r"].status_code == 502
    assert not any("/feedback" in line for line in stack.log(other)), "sent twice"
    # while a scoring POST in flight on a dying replica is answered by the other one
    with httpx.Client(timeout=10) as http:
        answer = http.post(stack.url("/predict"), json={"instances": ["hi"]})
    assert answer.status_code == 200 and answer.json()["backend"] == other


def test_without_a_ready_replica_the_live_ones_answer_for_themselves(tmp_path: Path) -> None:
    """Before the first promotion no predictor is ready: requests still reach one (which answers 401 or 503
    with its reason), instead of HAProxy's bare 503."""
    s = Stack(tmp_path, ready=False)
    try:
        s.start()
        r = httpx.post(s.url("/predict"), json={})
        assert r.status_code == 200 and r.json()["backend"] in {"p1", "p2"}
    finally:
        s.stop()
