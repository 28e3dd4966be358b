"""Helpers for the trainer tests: small data files, spec builders, job polling."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pandas as pd

from mlops_common.settings import REPO_ROOT
from tests.support.auth import ADMIN_TOKEN, bearer

FAST_CANDIDATES = [
    {"featurizer": {"type": "tfidf"}, "estimator": {"type": "logreg", "params": {"max_iter": 300}}},
    {"featurizer": {"type": "bow"}, "estimator": {"type": "naive_bayes"}},
]


def sms_subset(path: Path, rows: int = 400, seed: int = 1) -> Path:
    """A stratified sample of the real SMS set."""
    frame = pd.read_csv(REPO_ROOT / "data" / "sms_spam.csv")
    sample = frame.groupby("label").sample(frac=rows / len(frame), random_state=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    sample.to_csv(path, index=False)
    return path


def text_spec(uri: str | Path, threshold: float = 0.5, candidates: list[dict] | None = None) -> dict:
    return {
        "task": "text-classification",
        "data": {"uri": str(uri), "text_column": "text", "label_column": "label"},
        "metric": {"name": "f1_macro", "higher_is_better": True, "threshold": threshold},
        "candidates": candidates or FAST_CANDIDATES,
    }


def submit(trainer_url: str, model_name: str, spec: dict | None = None, token: str | None = ADMIN_TOKEN,
           **extra: object) -> httpx.Response:
    """POST /retrain as the principal of ``token`` (the test admin unless told; None sends no token)."""
    body = {"model_name": model_name, **({"spec": spec} if spec is not None else {}), **extra}
    return httpx.post(f"{trainer_url}/retrain", json=body, timeout=30, headers=bearer(token) if token else {})


def wait_job(trainer_url: str, job_id: str, timeout: float = 300, until: tuple[str, ...] = ("succeeded", "failed"),
             stage_prefix: str | None = None) -> dict:
    deadline = time.monotonic() + timeout
    job: dict = {}
    while time.monotonic() < deadline:
        job = httpx.get(f"{trainer_url}/jobs/{job_id}", timeout=10, headers=bearer(ADMIN_TOKEN)).json()
        assert 0 <= job["progress"] <= 1
        if job["status"] in until or (stage_prefix and str(job["stage"]).startswith(stage_prefix)):
            return job
        time.sleep(0.1 if stage_prefix else 0.5)  # a stage can be short on a quiet machine
    raise AssertionError(f"job {job_id} did not reach {until or stage_prefix} in {timeout}s: {job}")
