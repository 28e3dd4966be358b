"""The alias-change event that registry-proxy publishes on Redis and the predictor follows."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field


class ModelEvent(BaseModel):
    """One alias move: ``alias`` of ``model`` now points at ``version`` (None when the alias was removed)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    alias: str
    version: str | None
    previous_version: str | None = None
    action: str = "set"
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, raw: str | bytes) -> ModelEvent:
        return cls.model_validate_json(raw)
