"""The skeleton every service is built on (mlops_common.app, errors, observability), in process: one error
body, /health and /ready with the service's name and version, request ids, and JSON log lines that carry them."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from pydantic import BaseModel

from mlops_common.app import create_service_app
from mlops_common.errors import Conflict, Unavailable
from mlops_common.observability import configure_logging, log_context


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.problems = {}
    yield


def _ready(request: Request) -> tuple[dict[str, str], dict[str, Any]]:
    return request.app.state.problems, {"model_version": "7"}


class Item(BaseModel):
    name: str
    count: int


@pytest.fixture
def client() -> TestClient:
    app = create_service_app(name="demo", version="1.2.3", description="a test service", lifespan=_lifespan,
                             ready=_ready, metrics_namespace="demo")
    log = logging.getLogger("demo")

    @app.post("/items")
    def create(item: Item) -> Item:
        if item.name == "taken":
            raise Conflict("an item named 'taken' exists", name=item.name)
        if item.name == "later":
            raise Unavailable("the store is down", headers={"Retry-After": "5"})
        if item.name == "boom":
            raise RuntimeError("secret internals")
        log.info("created %s", item.name)
        return item

    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def test_health_and_ready_name_the_service_and_version(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok", "service": "demo", "version": "1.2.3"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "service": "demo", "version": "1.2.3", "problems": {},
                            "detail": None, "model_version": "7"}
    client.app.state.problems = {"database": "OperationalError"}
    down = client.get("/ready")
    assert down.status_code == 503
    assert down.json()["problems"] == {"database": "OperationalError"}
    assert down.json()["detail"] == "database: OperationalError"


def test_every_refusal_has_the_one_body_shape(client: TestClient) -> None:
    conflict = client.post("/items", json={"name": "taken", "count": 1})
    assert (conflict.status_code, conflict.json()) == (409, {"detail": "an item named 'taken' exists",
                                                             "name": "taken"})
    later = client.post("/items", json={"name": "later", "count": 1})
    assert later.status_code == 503 and later.headers["retry-after"] == "5"
    invalid = client.post("/items", json={"name": "x", "count": "many"})
    assert invalid.status_code == 422 and invalid.json()["detail"][0]["loc"] == ["body", "count"]
    nan = client.post("/items", content=b'{"name": "x", "count": NaN}', headers={"content-type": "application/json"})
    assert nan.status_code == 422 and "detail" in nan.json()
    missing = client.get("/nothing-here")
    assert (missing.status_code, missing.json()) == (404, {"detail": "Not Found"})
    crash = client.post("/items", json={"name": "boom", "count": 1})
    assert crash.status_code == 500
    assert crash.json() == {"detail": "internal error: RuntimeError"}
    assert "secret internals" not in crash.text


def test_request_ids_are_echoed_or_made(client: TestClient) -> None:
    mine = client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert mine.headers["x-request-id"] == "abc-123"
    made = client.get("/health", headers={"X-Request-ID": "not plain <script>"})
    assert made.headers["x-request-id"] != "not plain <script>" and len(made.headers["x-request-id"]) == 32
    assert client.get("/health").headers["x-request-id"] != client.get("/health").headers["x-request-id"]


def test_log_lines_are_json_with_the_request_id(client: TestClient, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    try:
        client.post("/items", json={"name": "widget", "count": 2}, headers={"X-Request-ID": "req-42"})
        with log_context(job_id="job-1", model="sms-spam", version="3"):
            logging.getLogger("worker").warning("trained")
        logging.getLogger("worker").warning("after")
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    finally:
        configure_logging("INFO", "text")
    created = next(line for line in lines if line["message"] == "created widget")
    assert created["request_id"] == "req-42" and created["level"] == "INFO" and created["logger"] == "demo"
    trained = next(line for line in lines if line["message"] == "trained")
    assert (trained["job_id"], trained["model"], trained["version"]) == ("job-1", "sms-spam", "3")
    after = next(line for line in lines if line["message"] == "after")
    assert "job_id" not in after


def test_a_long_reason_is_kept_whole_while_echoed_input_is_cut() -> None:
    from mlops_common.errors import error_body

    reason = "the policy cannot be changed with a retrain: " + "ask an approver. " * 20
    assert json.loads(error_body(reason))["detail"] == reason
    echoed = json.loads(error_body([{"input": "x" * 10_000}]))["detail"][0]["input"]
    assert len(echoed) < 300


def test_an_echoed_integer_past_64_bits_renders(client: TestClient) -> None:
    huge = client.post("/items", content=b'{"name": 123456789012345678901234567890, "count": 1}',
                       headers={"content-type": "application/json"})
    assert huge.status_code == 422
    assert huge.json()["detail"][0]["loc"] == ["body", "name"]
    assert huge.json()["detail"][0]["input"] == "123456789012345678901234567890"
