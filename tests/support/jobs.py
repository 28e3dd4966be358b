"""Retrains through trainer-api, as a client would: submit a spec, follow the job to its end."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.support.auth import ADMIN_TOKEN, bearer

FINISHED = ("succeeded", "failed")


def submit(trainer_url: str, model_name: str, spec: dict | None = None, token: str | None = ADMIN_TOKEN,
           **extra: object) -> httpx.Response:
    """POST /retrain as the principal of ``token`` (the test admin unless told; None sends no token)."""
    body = {"model_name": model_name, **({"spec": spec} if spec is not None else {}), **extra}
    return httpx.post(f"{trainer_url}/retrain", json=body, timeout=30, headers=bearer(token) if token else {})


def wait_job(trainer_url: str, job_id: str, timeout: float = 300, until: tuple[str, ...] = FINISHED,
             stage_prefix: str | None = None) -> dict[str, Any]:
    """The job once its status is one of ``until`` (or its stage starts with ``stage_prefix``); its progress stays
    within [0, 1] all along."""
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = httpx.get(f"{trainer_url}/jobs/{job_id}", timeout=10, headers=bearer(ADMIN_TOKEN)).json()
        assert 0 <= job["progress"] <= 1, job
        if job["status"] in until or (stage_prefix and str(job["stage"]).startswith(stage_prefix)):
            return job
        time.sleep(0.1 if stage_prefix else 0.5)  # a stage can be short on a quiet machine
    raise AssertionError(f"job {job_id} did not reach {until or stage_prefix} in {timeout}s: {job}")


def retrain(trainer_url: str, model_name: str, spec: dict[str, Any], token: str = ADMIN_TOKEN,
            timeout: float = 300) -> dict[str, Any]:
    """Submits a retrain (accepted: 202) and returns the finished job."""
    response = submit(trainer_url, model_name, spec, token=token)
    assert response.status_code == 202, response.text
    return wait_job(trainer_url, response.json()["job_id"], timeout=timeout)
