"""Request bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _version(value: object) -> str:
    text = str(value).strip()
    if not text.isdigit():
        raise ValueError("version must be a positive integer")
    return text


class GateMetric(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)

    name: str = Field(min_length=1, max_length=64)
    higher_is_better: bool = True
    threshold: float | None = None
    margin: float = 0.0


class GateRequest(BaseModel):
    # A contract between services: unknown fields from a newer trainer are ignored, not refused.
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    version: str
    job_id: str = Field(min_length=1, max_length=200)
    run_id: str | None = Field(None, max_length=64)
    metric: GateMetric
    challenger_score: float | None = None
    production_version: str | None = None
    production_score: float | None = None
    outcome: Literal["promoted", "kept", "pending_approval"]
    reason: str = Field("", max_length=2000)
    dataset_digest: str | None = Field(None, max_length=128)
    requested_at: datetime | None = None

    _check_version = field_validator("version", mode="before")(_version)

    @field_validator("production_version", mode="before")
    @classmethod
    def _optional_version(cls, value: object) -> str | None:
        return None if value is None or value == "" else _version(value)


class PromoteRequest(Body):
    version: str
    reason: str = Field("", max_length=2000)

    _check_version = field_validator("version", mode="before")(_version)


class RollbackRequest(Body):
    reason: str = Field("", max_length=2000)


class DecisionAction(Body):
    comment: str = Field("", max_length=2000)


class IncidentRequest(Body):
    reason: str = Field(min_length=1, max_length=2000)
