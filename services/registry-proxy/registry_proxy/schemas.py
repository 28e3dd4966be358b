"""Request bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlops_common.auth import ROLES, Role
from mlops_common.contracts import SHA256, GatePolicy


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _version(value: object) -> str:
    text = str(value).strip()
    if not text.isdigit():
        raise ValueError("version must be a positive integer")
    return text


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


class PrincipalCreate(Body):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")
    role: Role = Field(description=f"one of {', '.join(ROLES)}")
    kind: Literal["person", "service"] = "person"


class TokenCreate(Body):
    description: str | None = Field(None, max_length=500)
    expires_in_days: float | None = Field(None, gt=0, le=3650)
    expires_at: datetime | None = None


class PolicyUpdate(GatePolicy):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    reason: str = Field(min_length=1, max_length=2000, description="why the bar changes (audited)")


class GoldenSetPin(Body):
    sha256: str = Field(pattern=SHA256, description="sha256 of a dataset snapshot held by the trainer")
    source: str | None = Field(None, max_length=500)
    rows: int | None = Field(None, ge=0)
    reason: str = Field("", max_length=2000)


class PrincipalView(BaseModel):
    name: str
    role: str
    kind: str
    created_at: str | None = None
    created_by: str | None = None
    disabled_at: str | None = None


class TokenView(BaseModel):
    id: int
    prefix: str
    description: str | None = None
    created_at: str | None = None
    created_by: str | None = None
    expires_at: str | None = None
    revoked_at: str | None = None
    revoked_by: str | None = None


class PrincipalDetail(PrincipalView):
    tokens: list[TokenView]


class NewToken(TokenView):
    principal: str
    token: str = Field(description="the API token: shown only now, stored only as a hash")
