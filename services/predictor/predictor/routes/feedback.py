"""POST /feedback: ground truth for an earlier prediction."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from mlops_common.auth import FeedbackGiver
from predictor.deps import Service
from predictor.schemas import ErrorBody, FeedbackRequest, FeedbackResponse

router = APIRouter(tags=["feedback"])


@router.post("/feedback", response_model=FeedbackResponse, response_model_exclude_none=True,
             responses={404: {"model": ErrorBody, "description": "unknown or expired request_id"},
                        409: {"model": ErrorBody, "description": "feedback already recorded"},
                        503: {"model": ErrorBody, "description": "no version served, or Redis unavailable"}})
async def feedback(body: FeedbackRequest, svc: Service, _: FeedbackGiver) -> Any:
    """``{"request_id", "label"}`` (classifiers) or ``{"request_id", "value"}`` (regressors), with ``index``
    for a request of several instances."""
    return await svc.feedback(body)
