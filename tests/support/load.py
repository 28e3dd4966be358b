"""Background traffic for tests: request loops that account for every request, and threads that report their death.

A thread that dies on an exception only prints it; a test reading what the thread collected would then pass on
whatever it had gathered so far. Everything here records the exception instead, for the test to assert on.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

SPAM = "WINNER!! Claim your free prize now, call 09061701461 to collect your cash award"
HAM = "Are we still meeting for lunch tomorrow?"


class CheckedThread(threading.Thread):
    """A daemon thread that keeps the exception it died of; ``finish`` joins it and says what went wrong."""

    def __init__(self, target: Callable[[], Any], name: str | None = None) -> None:
        super().__init__(target=self._guarded, name=name, daemon=True)
        self._work = target
        self.error: str | None = None

    def _guarded(self) -> None:
        try:
            self._work()
        except BaseException as exc:  # noqa: BLE001 - whatever it was, the test must hear of it
            self.error = "".join(traceback.format_exception(exc))[-2000:]

    def finish(self, timeout: float = 60) -> list[str]:
        """Joins the thread; returns the problems (it died, or it is still running), empty when it ended cleanly."""
        self.join(timeout)
        if self.is_alive():
            return [f"thread {self.name} still running after {timeout}s"]
        return [f"thread {self.name} died:\n{self.error}"] if self.error else []


@dataclass
class Load:
    """Threads posting ``{"instances": instances}`` to ``url``/predict in a loop until the block ends.

    Every request is counted when sent, and ends up either ``answered`` (a 200) or in ``failures`` (another
    status, a transport error, an answer without a model version); a thread that dies or hangs is a failure
    too. After the block, ``sent == answered + len(failures)``."""

    url: str
    threads: int = 3
    instances: list[Any] = field(default_factory=lambda: [SPAM, HAM])
    sent: int = 0
    answered: int = 0
    failures: list[str] = field(default_factory=list)
    versions: set[str] = field(default_factory=set)
    request_ids: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[CheckedThread] = field(default_factory=list)

    def _one(self, client: httpx.Client) -> None:
        with self._lock:
            self.sent += 1
        try:
            r = client.post(f"{self.url}/predict", json={"instances": self.instances})
            body = r.json() if r.status_code == 200 else None
            version, request_id = (body["model_version"], body["request_id"]) if body else (None, None)
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            with self._lock:
                self.failures.append(f"{type(exc).__name__}: {exc}")
            return
        with self._lock:
            if body is None:
                self.failures.append(f"{r.status_code} {r.text[:200]}")
                return
            self.answered += 1
            self.versions.add(str(version))
            if len(self.request_ids) < 2000:
                self.request_ids.append(str(request_id))

    def _loop(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                self._one(client)
                time.sleep(0.01)

    def fresh_request_ids(self, start: int, count: int) -> list[str]:
        with self._lock:
            return self.request_ids[start:start + count]

    def __enter__(self) -> Load:
        self._workers = [CheckedThread(self._loop, name=f"load-{i}") for i in range(self.threads)]
        for t in self._workers:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        problems = [problem for t in self._workers for problem in t.finish(60)]
        unaccounted = self.sent - self.answered - len(self.failures)
        self.failures.extend(problems)
        if unaccounted:
            self.failures.append(f"{unaccounted} of {self.sent} requests neither answered nor failed")
