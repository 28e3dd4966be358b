"""Typed answers of the stack's APIs: the client's own models of the bodies the services send.

Every model keeps fields it does not declare (``extra="allow"``), so a newer server's additions reach the
caller; versions are strings (numbers are coerced), times ISO 8601 strings as the services write them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

TERMINAL_JOB_STATUSES = ("succeeded", "failed")


class Answer(BaseModel):
    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True)


# predictor


class Prediction(Answer):
    predictions: list[Any]
    model_name: str
    model_version: str
    request_id: str
    probabilities: list[dict[str, float]] | None = None


class FeedbackResult(Answer):
    request_id: str
    index: int
    model_version: str
    prediction: Any = None
    window: int
    correct: bool | None = None
    live_accuracy: float | None = None
    absolute_error: float | None = None
    live_mae: float | None = None


class ServedModel(Answer):
    model_name: str
    model_version: str | None = None
    default: bool = False
    loaded_versions: list[str] = Field(default_factory=list)


class ServedModelInfo(Answer):
    """A predictor's ``GET /model`` or ``/models/{name}``: the served version and how following goes."""

    model_name: str
    model_version: str | None = None
    serving: bool = False
    task: str | None = None
    classes: list[str] | None = None
    alias_version: str | None = None
    last_error: str | None = None


class Tensor(Answer):
    """An OIP v2 tensor: ``data`` row-major, flat or nested."""

    name: str
    datatype: str
    shape: list[int]
    data: list[Any] = Field(default_factory=list)
    parameters: dict[str, Any] | None = None


class InferResponse(Answer):
    model_name: str
    model_version: str
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[Tensor]

    def output(self, name: str) -> Tensor:
        return next(o for o in self.outputs if o.name == name)


# trainer


class Dataset(Answer):
    dataset_id: str
    sha256: str
    format: str
    rows: int
    columns: list[str]
    source: str
    created_at: str
    size_bytes: int


class RetrainAccepted(Answer):
    job_id: str
    model_name: str
    status: str
    created: bool = Field(description="false when the idempotency key already made this job")


class JobScores(Answer):
    challenger: dict[str, float | None] | None = None
    production: dict[str, float | None] | None = None


class Job(Answer):
    job_id: str
    model_name: str
    status: str = Field(description="queued, running, succeeded or failed")
    stage: str
    progress: float = Field(description="0 to 1")
    created_at: str | None = None
    updated_at: str | None = None
    finished_at: str | None = None
    requested_by: str | None = None
    run_id: str | None = None
    model_version: str | None = None
    best_candidate: str | None = None
    production_version: str | None = None
    metrics: JobScores = Field(default_factory=JobScores)
    decision: str | None = Field(None, description="promoted, kept or pending_approval")
    decision_id: int | None = None
    reason: str | None = None
    error: str | None = None
    spec: dict[str, Any] | None = None

    @property
    def percent(self) -> int:
        return int(round(self.progress * 100))

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_JOB_STATUSES


class Spec(Answer):
    """A model spec trainer-api can retrain; ``error`` set (and the rest empty) for one that does not resolve."""

    name: str
    task: str | None = None
    description: str | None = None
    data_uri: str | None = None
    metric: dict[str, Any] | None = None
    schedule: str | None = None
    candidates: list[str] = Field(default_factory=list)
    error: str | None = None


# registry-proxy


class Version(Answer):
    version: str
    aliases: list[str] = Field(default_factory=list)
    status: str | None = None
    run_id: str | None = None
    source: str | None = None
    created_at: str | None = None
    description: str | None = None
    tags: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)


class Model(Answer):
    name: str
    description: str | None = None
    aliases: dict[str, str] = Field(default_factory=dict)
    production_version: str | None = None
    latest_version: str | None = None
    created_at: str | None = None
    updated_at: str | None = None


class ModelDetail(Model):
    versions: list[Version] = Field(default_factory=list, description="newest first")


class DecisionMetric(Answer):
    name: str
    higher_is_better: bool = True
    threshold: float | None = None


class Decision(Answer):
    id: int
    model_name: str
    version: str
    status: str = Field(description="pending, approved, rejected or superseded")
    job_id: str | None = None
    metric: DecisionMetric | None = None
    challenger_score: float | None = None
    production_version: str | None = None
    production_score: float | None = None
    reason: str | None = None
    created_at: str | None = None
    decided_at: str | None = None
    decided_by: str | None = None
    comment: str | None = None
    evidence: dict[str, Any] = Field(default_factory=dict)
    links: dict[str, str] = Field(default_factory=dict)


class PromoteResult(Answer):
    model_name: str
    production_version: str
    previous_version: str | None = None
    changed: bool = True


class RollbackResult(Answer):
    model_name: str
    production_version: str
    rolled_back_version: str | None = None


class CanaryCheck(Answer):
    name: str
    value: float | None = None
    threshold: float
    passed: bool


class CanaryStep(Answer):
    step: int
    weight: int
    time: str
    passed: bool
    checks: list[CanaryCheck] = Field(default_factory=list)


class Canary(Answer):
    id: int
    model_name: str
    version: str
    production_version: str | None = None
    status: str = Field(description="running, paused, rolled_back, promoted or awaiting_approval")
    steps: list[int]
    step_index: int
    weight: int
    interval: str
    require_approval: bool = False
    thresholds: dict[str, float] = Field(default_factory=dict)
    checks: list[CanaryStep] = Field(default_factory=list)
    reason: str | None = None
    started_by: str | None = None
    started_at: str | None = None
    next_check_at: str | None = None
    finished_at: str | None = None


class CanarySplit(Answer):
    version: str
    weight: int


class ShadowSplit(Answer):
    version: str
    share: int = Field(description="share of live requests (%) also sent to the shadow version")


class Rollout(Answer):
    model_name: str
    production: str | None = None
    canary: CanarySplit | None = None
    shadow: ShadowSplit | None = None
    status: str | None = None


class LiveQuality(Answer):
    """Both versions scored against the feedback labels of the same mirrored requests."""

    metric: str = Field(description="accuracy or mae")
    higher_is_better: bool = True
    shadow: float
    production: float | None = None


class ShadowEvidence(Answer):
    """What the predictors reported over a shadow period (from Prometheus)."""

    seconds: float = Field(description="time in shadow so far (or until it ended)")
    compared: int = 0
    agreement: float | None = Field(None, description="share of equal answers (classifiers)")
    agreement_per_class: dict[str, float] = Field(default_factory=dict)
    mean_abs_difference: float | None = Field(None, description="regressors: mean |shadow - production|")
    p50_seconds: float | None = None
    p99_seconds: float | None = None
    requests: int = 0
    errors: int = 0
    shed: int = Field(0, description="mirrored requests dropped because the shadow was slow or busy")
    live_quality: LiveQuality | None = None


class Shadow(Answer):
    """A shadow period: a version answering a share of production's live requests off the request path.

    Starting and stopping answer without the evidence; ``shadow(name)`` adds it (``evidence`` None with
    ``evidence_error`` when Prometheus could not be read) and, under a policy, what it still ``missing``."""

    id: int
    model_name: str
    version: str
    production_version: str | None = None
    status: str = Field(description="running, stopped or promoted")
    share: int = Field(description="share of live requests (%) mirrored to the shadow")
    reason: str | None = None
    started_by: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    ended_by: str | None = None
    end_reason: str | None = None
    evidence: ShadowEvidence | None = None
    evidence_error: str | None = None
    policy: dict[str, Any] | None = None
    missing: list[str] | None = None


class AuditEntry(Answer):
    id: int
    time: str | None = None
    actor: str
    on_behalf_of: str | None = None
    action: str
    model_name: str
    from_version: str | None = None
    to_version: str | None = None
    reason: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    details: dict[str, Any] = Field(default_factory=dict)


class AuditPage(Answer):
    items: list[AuditEntry]
    total: int
    limit: int
    offset: int
    next_offset: int | None = None
    next_before_id: int | None = None


class DoraReport(Answer):
    model_name: str
    window_days: float
    window_start: str
    window_end: str
    deployments: int
    deployment_frequency_per_day: float
    lead_time_seconds: float | None = None
    rollbacks: int
    change_failure_ratio: float | None = None
    restores: int
    time_to_restore_seconds: float | None = None
    degraded: bool = False
    open_incidents: int = 0


class Identity(Answer):
    """Who holds a token (``GET /auth/whoami``)."""

    name: str
    role: str
    kind: str = "person"


class Principal(Answer):
    name: str
    role: str
    kind: str
    created_at: str | None = None
    created_by: str | None = None
    disabled_at: str | None = None


class Token(Answer):
    id: int
    prefix: str
    description: str | None = None
    created_at: str | None = None
    expires_at: str | None = None
    revoked_at: str | None = None


class PrincipalDetail(Principal):
    tokens: list[Token] = Field(default_factory=list)


class NewToken(Token):
    principal: str
    token: str = Field(description="the API token: shown only now")
