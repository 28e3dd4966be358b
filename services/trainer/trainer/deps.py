"""FastAPI dependencies, as ``Annotated`` aliases."""

from __future__ import annotations

import hmac
from functools import lru_cache
from typing import Annotated

from fastapi import Depends, Header, HTTPException

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


def require_token(settings: Annotated[TrainerSettings, Depends(get_settings)],
                  authorization: Annotated[str | None, Header()] = None) -> None:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(401, "missing bearer token (Authorization: Bearer $TRAINER_API_TOKEN)",
                            headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(token.encode(), settings.trainer_api_token.encode()):
        raise HTTPException(401, "invalid bearer token", headers={"WWW-Authenticate": "Bearer"})


Settings = Annotated[TrainerSettings, Depends(get_settings)]
Store = Annotated[JobStore, Depends(job_store)]
Datasets = Annotated[DatasetStore, Depends(dataset_store)]
Authenticated = Depends(require_token)
