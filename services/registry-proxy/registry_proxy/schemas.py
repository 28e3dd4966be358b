"""Request bodies and the shapes of the answers (the OpenAPI document shows both).

Times in answers are ISO 8601 strings, as the service writes them; free-form maps (tags, metrics, details,
evidence, payloads) are passed through as they are."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlops_common.auth import ROLES, Role
from mlops_common.contracts import SHA256, ModelPolicy, check_interval, check_steps


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


class CanaryStart(Body):
    version: str
    steps: list[int] | None = Field(None, min_length=1, max_length=20,
                                    description="the canary's share of traffic (%) at each step; increasing, ending "
                                                "at 100. Default: the policy's, else [5, 25, 50, 100]")
    interval: str | None = Field(None, description="how long each step lasts before its analysis (1s to 24h). "
                                                  "Default: the policy's, else 2m")
    require_approval: bool | None = Field(None, description="after the last step, wait for POST .../canary/approve. "
                                                            "Default: the policy's, else false")
    max_error_ratio: float | None = Field(None, ge=0, le=1, description="default: policy, CANARY_MAX_ERROR_RATIO")
    max_p99_seconds: float | None = Field(None, gt=0, description="default: policy, CANARY_MAX_P99_SECONDS")
    max_quality_drop: float | None = Field(None, ge=0, le=1, description="default: policy, CANARY_MAX_QUALITY_DROP")
    reason: str = Field("", max_length=2000)

    _check_version = field_validator("version", mode="before")(_version)
    _steps = field_validator("steps")(check_steps)
    _interval = field_validator("interval")(check_interval)


class ShadowStart(Body):
    version: str
    share: int = Field(100, ge=1, le=100, description="share of live requests mirrored to the shadow (%)")
    reason: str = Field("", max_length=2000)

    _check_version = field_validator("version", mode="before")(_version)


class CanaryAction(Body):
    reason: str = Field("", max_length=2000)


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


class PolicyUpdate(ModelPolicy):
    """A new revision. ``canary`` and ``shadow`` left out keep the blocks in force; ``null`` removes one."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    reason: str = Field(min_length=1, max_length=2000, description="why the bar changes (audited)")


class GoldenSetPin(Body):
    sha256: str = Field(pattern=SHA256, description="sha256 of a dataset snapshot held by the trainer")
    source: str | None = Field(None, max_length=500)
    rows: int | None = Field(None, ge=0)
    reason: str = Field("", max_length=2000)


class View(BaseModel):
    """An answer: every field the service wrote is kept, declared or not."""

    model_config = ConfigDict(extra="allow")


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


class ModelSummary(View):
    name: str
    description: str
    aliases: dict[str, str] = Field(description="alias -> version")
    production_version: str | None
    latest_version: str | None
    created_at: str | None
    updated_at: str | None


class VersionView(View):
    version: str
    aliases: list[str]
    status: str | None
    run_id: str | None
    experiment_id: str | None
    source: str | None
    created_at: str | None
    description: str
    tags: dict[str, Any]
    metrics: dict[str, Any] = Field(description="the run's metrics (null where not finite)")


class ModelDetail(ModelSummary):
    versions: list[VersionView] = Field(description="newest first")


class PromoteResult(View):
    model_name: str
    production_version: str
    previous_version: str | None
    changed: bool = Field(description="false when the version already was in production")


class RollbackResult(View):
    model_name: str
    production_version: str
    rolled_back_version: str | None
    previous_version: str | None = Field(description="always null: a rolled-back version is no rollback target")


class IncidentView(View):
    id: int
    model_name: str
    version: str | None = Field(description="the production version when the incident was opened")
    reason: str
    opened_by: str
    opened_at: str | None


class DoraReport(View):
    model_name: str
    window_days: float
    window_start: str
    window_end: str
    deployments: int
    deployment_frequency_per_day: float
    lead_time_seconds: float | None
    lead_time_seconds_mean: float | None
    lead_time_samples: int
    rollbacks: int
    change_failure_ratio: float | None
    restores: int
    time_to_restore_seconds: float | None
    degraded: bool
    degraded_since: str | None
    open_incidents: int


class DecisionMetric(View):
    name: str
    higher_is_better: bool
    threshold: float | None


class DecisionView(View):
    id: int
    model_name: str
    version: str
    status: Literal["pending", "approved", "rejected", "superseded"]
    job_id: str | None
    run_id: str | None
    metric: DecisionMetric
    challenger_score: float | None
    production_version: str | None
    production_score: float | None
    dataset_digest: str | None
    reason: str | None
    requested_at: str | None
    created_at: str | None
    decided_at: str | None
    decided_by: str | None
    comment: str | None
    evidence: dict[str, Any]
    links: dict[str, str] = Field(description="ui, version and (when known) the MLflow run")


class AuditEntryView(View):
    id: int
    time: str | None
    actor: str
    on_behalf_of: str | None
    action: str
    model_name: str
    from_version: str | None
    to_version: str | None
    reason: str | None
    metrics: dict[str, Any]
    details: dict[str, Any]


class AuditPage(View):
    items: list[AuditEntryView] = Field(description="newest first")
    total: int
    limit: int
    offset: int
    next_offset: int | None
    next_before_id: int | None = Field(description="the cursor for the next page (pass it as before_id)")


class NotificationView(View):
    id: int
    event: str
    model_name: str
    status: Literal["pending", "sent", "failed"]
    attempts: int
    last_error: str | None
    created_at: str
    updated_at: str
    payload: dict[str, Any]


class CanaryCheck(View):
    name: str = Field(description="error_ratio, p99_seconds or quality_drop")
    metric: str | None = Field(None, description="quality_drop: accuracy (absolute drop) or mae (relative rise)")
    value: float | None = Field(description="null when Prometheus has no such series (no data)")
    threshold: float
    passed: bool
    scope: Literal["version", "model", "none"] = Field(
        description="version: the canary's own series; model: the model's (no per-version series); none: no data")
    query: str


class CanaryStepResult(View):
    step: int
    weight: int
    time: str
    passed: bool
    checks: list[CanaryCheck]


class CanaryView(View):
    id: int
    model_name: str
    version: str
    production_version: str | None
    status: Literal["running", "paused", "rolled_back", "promoted", "awaiting_approval"]
    steps: list[int]
    step_index: int
    weight: int = Field(description="the canary's share of traffic (%) now; 0 once it ended")
    interval: str
    interval_seconds: float
    require_approval: bool
    thresholds: dict[str, float]
    checks: list[CanaryStepResult] = Field(description="one entry per analysed step, oldest first")
    reason: str | None = Field(description="why it is paused, or why it ended")
    started_by: str
    started_at: str | None
    updated_at: str | None
    next_check_at: str | None
    finished_at: str | None
    finished_by: str | None


class CanarySplit(BaseModel):
    version: str
    weight: int = Field(description="share of requests (%) the canary version answers")


class ShadowSplit(BaseModel):
    version: str
    share: int = Field(description="share of live requests (%) also sent to the shadow version")


class RolloutView(BaseModel):
    model_name: str
    production: str | None = Field(description="the version the rest of the traffic goes to")
    canary: CanarySplit | None
    shadow: ShadowSplit | None
    status: str | None = Field(description="the canary's status, null without one under way")


class LiveQuality(View):
    metric: Literal["accuracy", "mae"]
    higher_is_better: bool
    shadow: float
    production: float | None


class ShadowEvidence(View):
    seconds: float = Field(description="time in shadow so far (or until it ended)")
    compared: int = Field(description="answers of the shadow compared with production's")
    agreement: float | None = Field(description="share of equal answers (classifiers); null without comparisons")
    agreement_per_class: dict[str, float] = Field(description="agreement by production's answer (classifiers)")
    mean_abs_difference: float | None = Field(description="regressors: mean |shadow - production|")
    p50_seconds: float | None
    p99_seconds: float | None
    requests: int = Field(description="mirrored requests the shadow answered")
    errors: int
    shed: int = Field(description="mirrored requests dropped because the shadow was slow or busy")
    live_quality: LiveQuality | None = Field(description="from feedback labels, both versions on the same requests")


class ShadowView(View):
    id: int
    model_name: str
    version: str
    production_version: str | None
    status: Literal["running", "stopped", "promoted"]
    share: int
    reason: str | None
    started_by: str
    started_at: str | None
    ended_at: str | None
    ended_by: str | None
    end_reason: str | None


class ShadowDetail(ShadowView):
    evidence: ShadowEvidence | None = Field(description="from Prometheus; null when it could not be read")
    evidence_error: str | None
    policy: dict[str, Any] | None = Field(description="the shadow block of the model's policy, if any")
    missing: list[str] | None = Field(description="what the evidence still lacks against the policy")
