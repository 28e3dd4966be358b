"""The client's retries against a tiny local HTTP server that answers 503 (with or without Retry-After) before it
answers 200: a scripted server is the only way to choose exactly how many 503s come first. (The predictor's own
503 while a version loads is in test_against_the_stack.py.) No mocks: real sockets, real httpx."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from mlops_client import AsyncClient, Client, NotFoundError, UnavailableError, ValidationError

JOB = {"job_id": "j1", "model_name": "m", "status": "running", "stage": "training", "progress": 0.5,
       "metrics": {"challenger": None, "production": None}}


class Script:
    """What the server answers: ``unavailable`` 503s first (``Retry-After`` when set), then ``final``."""

    def __init__(self) -> None:
        self.unavailable = 0
        self.retry_after: str | None = None
        self.final: tuple[int, dict] = (200, JOB)
        self.requests: list[tuple[str, str, float]] = []


@pytest.fixture()
def server() -> Iterator[tuple[str, Script]]:
    script = Script()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            self.rfile.read(length)
            with lock:
                script.requests.append((self.command, self.path, time.monotonic()))
                failing = len(script.requests) <= script.unavailable
            status, body = (503, {"detail": "warming up"}) if failing else script.final
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            if failing and script.retry_after is not None:
                self.send_header("retry-after", script.retry_after)
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = answer  # noqa: N815 - BaseHTTPRequestHandler's names

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", script
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture()
def list_answer(server: tuple[str, Script]) -> tuple[str, Script]:
    server[1].final = (200, [])  # type: ignore[assignment]
    return server


def client(url: str, **kwargs: object) -> Client:
    return Client(trainer_url=url, predictor_url=url, registry_url=url, token="t", **kwargs)  # type: ignore[arg-type]


def test_a_read_is_retried_after_what_retry_after_asks(server: tuple[str, Script]) -> None:
    url, script = server
    script.unavailable, script.retry_after = 2, "1"
    with client(url, retries=3, backoff=0.01) as mlops:
        job = mlops.job("j1")
    assert (job.job_id, job.stage, job.percent) == ("j1", "training", 50)
    times = [t for _, _, t in script.requests]
    assert len(times) == 3
    # Retry-After: 1 was honoured, not the 0.01 s backoff
    assert all(b - a >= 0.9 for a, b in itertools.pairwise(times)), times


def test_without_retry_after_the_backoff_doubles(list_answer: tuple[str, Script]) -> None:
    url, script = list_answer
    script.unavailable = 3
    with client(url, retries=3, backoff=0.2) as mlops:
        assert mlops.models() == []
    gaps = [b - a for (_, _, a), (_, _, b) in zip(script.requests, script.requests[1:], strict=False)]
    assert len(gaps) == 3
    assert 0.2 <= gaps[0] < 0.6 and 0.4 <= gaps[1] < 1.0 and 0.8 <= gaps[2] < 1.6, gaps


def test_gives_up_after_the_retries_with_the_servers_reason(list_answer: tuple[str, Script]) -> None:
    url, script = list_answer
    script.unavailable, script.retry_after = 10, "0"
    with client(url, retries=2) as mlops, pytest.raises(UnavailableError) as caught:
        mlops.models()
    assert len(script.requests) == 3
    assert caught.value.status == 503 and caught.value.detail == "warming up"
    assert "registry-proxy answered 503: warming up" in str(caught.value)


def test_a_call_that_is_not_idempotent_is_not_retried(list_answer: tuple[str, Script]) -> None:
    url, script = list_answer
    script.unavailable, script.retry_after = 1, "0"
    with client(url, retries=3) as mlops, pytest.raises(UnavailableError):
        mlops.retrain("m")  # no idempotency key: a second POST could enqueue a second job
    assert [m for m, _, _ in script.requests] == ["POST"]
    script.requests.clear()
    script.final = (202, {"job_id": "j2", "model_name": "m", "status": "queued", "created": True})
    with client(url, retries=3) as mlops:
        assert mlops.retrain("m", idempotency_key="k").job_id == "j2"  # with a key it is retried
    assert len(script.requests) == 2


def test_refusals_are_not_retried_and_name_their_class(server: tuple[str, Script]) -> None:
    url, script = server
    script.final = (404, {"detail": "no job 'x'"})
    with client(url, retries=3) as mlops, pytest.raises(NotFoundError) as caught:
        mlops.job("x")
    assert len(script.requests) == 1
    assert (caught.value.status, caught.value.detail) == (404, "no job 'x'")
    script.final = (422, {"detail": [{"loc": ["body", "spec", "metric"], "msg": "Field required"}]})
    with client(url) as mlops, pytest.raises(ValidationError, match="spec.metric: Field required"):
        mlops.retrain("m")


def test_a_closed_port_is_unavailable_after_the_retries() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again when the block ends: nothing listens there
    started = time.monotonic()
    with client(f"http://127.0.0.1:{port}", retries=2, backoff=0.1) as mlops, \
            pytest.raises(UnavailableError, match="trainer-api unreachable") as caught:
        mlops.jobs()
    assert caught.value.status is None
    assert time.monotonic() - started >= 0.3  # 0.1 + 0.2 s of backoff between the three tries


def test_the_async_client_retries_the_same_way(server: tuple[str, Script]) -> None:
    url, script = server
    script.unavailable, script.retry_after = 1, "1"

    async def run() -> str:
        async with AsyncClient(trainer_url=url, token="t", retries=2) as mlops:
            progress: list[int] = []
            script.final = (200, {**JOB, "status": "succeeded", "progress": 1.0})
            job = await mlops.wait_for_job("j1", on_progress=lambda j: progress.append(j.percent), poll=0.01)
            assert progress == [100]
            return job.status

    assert asyncio.run(run()) == "succeeded"
    assert len(script.requests) == 2
    assert script.requests[1][2] - script.requests[0][2] >= 0.9
