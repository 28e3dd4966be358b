"""FastAPI dependencies, as ``Annotated`` aliases."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated

from fastapi import Depends, Request

from mlops_common.auth import bearer_token
from trainer.datasets import DatasetStore
from trainer.jobs import JobStore, connect
from trainer.lineage import mlflow_restorer
from trainer.settings import TrainerSettings, get_settings


@lru_cache
def job_store() -> JobStore:
    s = get_settings()
    return JobStore(connect(s.redis_url), s.job_ttl_seconds)


@lru_cache
def dataset_store() -> DatasetStore:
    s = get_settings()
    return DatasetStore(s.datasets_dir, s.allowed_data_roots, s.max_upload_bytes, s.http_timeout_seconds,
                        restore=mlflow_restorer(s.mlflow_tracking_uri))


def bearer(request: Request) -> str | None:
    """The caller's own token, forwarded to registry-proxy when an approver changes a policy with a retrain."""
    return bearer_token(request.headers.get("authorization"))


Settings = Annotated[TrainerSettings, Depends(get_settings)]
Store = Annotated[JobStore, Depends(job_store)]
Datasets = Annotated[DatasetStore, Depends(dataset_store)]
CallerToken = Annotated[str | None, Depends(bearer)]
