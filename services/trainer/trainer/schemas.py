"""What trainer-api takes and answers: the request bodies and every route's response model (so the OpenAPI
document describes the answers)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mlops_common.contracts import GatePolicy
from trainer.jobs import Status

# requests


class RetrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    spec: dict[str, Any] | None = Field(None, description="Partial spec merged over models/<model_name>.yaml")
    idempotency_key: str | None = Field(None, min_length=1, max_length=200)


class Alert(BaseModel):
    model_config = ConfigDict(extra="allow")

    status: str = "firing"
    labels: dict[str, str] = Field(default_factory=dict)
    fingerprint: str | None = None


class Notification(BaseModel):
    """The common shape of Alertmanager's and Grafana's webhook payloads (extra fields are ignored)."""

    model_config = ConfigDict(extra="allow")

    status: str = "firing"
    groupKey: str | None = None  # noqa: N815 - the wire name
    commonLabels: dict[str, str] = Field(default_factory=dict)  # noqa: N815
    alerts: list[Alert]


# answers


class Accepted(BaseModel):
    job_id: str
    model_name: str
    status: str
    created: bool


class CandidateResult(BaseModel):
    """One trained candidate (a grid point counts as one) of a job."""

    candidate: str
    status: str
    run_id: str | None = None
    score: float | None = None
    seconds: float | None = None
    error: str | None = None


class JobScores(BaseModel):
    """Every metric of the task on the job's test split, for the challenger and the production version."""

    challenger: dict[str, float | None] | None = None
    production: dict[str, float | None] | None = None


class GoldenScoresView(BaseModel):
    """The pinned golden set the job used and both versions' scores on it (``error``: why one is missing)."""

    sha256: str
    challenger: dict[str, float | None] | None = None
    production: dict[str, float | None] | None = None
    error: str | None = None


class GoldenLookupFailed(BaseModel):
    """No golden set was used because registry-proxy could not be asked which one is pinned."""

    sha256: None = None
    lookup_error: str


class JobView(BaseModel):
    """A retrain job as the API shows it; the fields are filled in as the job advances."""

    model_config = ConfigDict(coerce_numbers_to_str=True)

    job_id: str
    model_name: str
    status: Status
    stage: str
    progress: float = Field(ge=0, le=1)
    created_at: str | None = None
    updated_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    source: str | None = Field(None, description="api, schedule, or alert:<grafana|alertmanager>")
    idempotency_key: str | None = None
    requested_by: str | None = None
    run_id: str | None = None
    model_uri: str | None = None
    model_version: str | None = Field(None, description="The version registry-proxy registered at the gate")
    best_candidate: str | None = None
    production_version: str | None = None
    production_error: str | None = None
    metrics: JobScores
    decision: str | None = Field(None, description="The gate's outcome: promoted, kept or pending_approval")
    decision_id: int | None = None
    reason: str | None = None
    policy: GatePolicy | None = Field(None, description="The gate policy registry-proxy applied")
    trainer_outcome: str | None = Field(None, description="The trainer's own reading of the gate (not trusted)")
    dataset: dict[str, Any] | None = None
    test_split: dict[str, Any] | None = None
    candidates: list[CandidateResult] | None = None
    error: str | None = None
    golden: GoldenScoresView | GoldenLookupFailed | None = None


class JobDetail(JobView):
    spec: dict[str, Any] | None = Field(None, description="The resolved spec the job trains")


class JobList(BaseModel):
    jobs: list[JobView]


class SpecSummary(BaseModel):
    name: str
    task: str
    description: str
    data_uri: str
    metric: dict[str, Any]
    schedule: str | None
    candidates: list[str]


class SpecProblem(BaseModel):
    """A spec file that does not resolve (``error``: the first line of why)."""

    name: str
    error: str


class SpecList(BaseModel):
    specs: list[SpecSummary | SpecProblem]


class DatasetView(BaseModel):
    dataset_id: str
    sha256: str
    format: Literal["csv", "parquet"]
    rows: int
    columns: list[str]
    source: str
    created_at: str
    size_bytes: int


class DatasetList(BaseModel):
    datasets: list[DatasetView]


class AlertRetrain(BaseModel):
    model_name: str
    outcome: Literal["enqueued", "cooldown", "capped", "rejected"]
    job_id: str | None = None
    detail: str | None = None


class AlertAnswer(BaseModel):
    retrains: list[AlertRetrain]
    ignored_alerts: int
