"""GET /model: the served version and how following the registry goes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from mlops_common.auth import Reader
from predictor.deps import Service
from predictor.schemas import ModelInfo

router = APIRouter(tags=["model"])


@router.get("/model", response_model=ModelInfo)
async def model_info(svc: Service, _: Reader) -> Any:
    """The served version, its inputs and classes; the alias, previous and prefetched versions; reloads,
    failures, the last swap and the drift report."""
    return svc.describe()
