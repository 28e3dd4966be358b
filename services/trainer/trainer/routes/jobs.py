"""POST /retrain, GET /jobs, GET /jobs/{id}."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlops_common.auth import Reader, Trainer
from mlops_common.spec import resolve_spec
from trainer.deps import CallerToken, Datasets, Settings, Store
from trainer.submission import submit

router = APIRouter(tags=["jobs"])


class RetrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    spec: dict[str, Any] | None = Field(None, description="Partial spec merged over models/<model_name>.yaml")
    idempotency_key: str | None = Field(None, min_length=1, max_length=200)


class Accepted(BaseModel):
    job_id: str
    model_name: str
    status: str
    created: bool


@router.post("/retrain", status_code=202, response_model=Accepted)
def retrain(body: RetrainRequest, response: Response, settings: Settings, store: Store,
            datasets: Datasets, principal: Trainer, token: CallerToken) -> Accepted:
    """Enqueues a retrain (role scientist or higher). The spec may change what is trained; a change to its
    ``metric`` block (the gate policy) is refused unless the caller is an approver."""
    result = submit(settings, store, datasets, body.model_name, body.spec, body.idempotency_key,
                    principal=principal, token=token)
    if not result.created:
        response.status_code = 200
    job = result.job
    response.headers["Location"] = f"/jobs/{job['job_id']}"
    return Accepted(job_id=job["job_id"], model_name=job["model_name"], status=job["status"], created=result.created)


@router.get("/jobs")
def list_jobs(store: Store, _: Reader, model_name: str | None = None,
              status: Literal["queued", "running", "succeeded", "failed"] | None = None,
              limit: int = Query(50, ge=1, le=500)) -> dict[str, Any]:
    return {"jobs": store.list(model_name=model_name, status=status, limit=limit)}


@router.get("/jobs/{job_id}")
def get_job(job_id: str, store: Store, _: Reader) -> dict[str, Any]:
    """The job, with the resolved spec it trains (the list leaves the spec out)."""
    raw = store.raw(job_id) if len(job_id) <= 64 else None
    if raw is None:
        raise HTTPException(404, f"no job {job_id!r}")
    return {**store.public(raw), "spec": raw.get("spec")}


@router.get("/specs")
def list_specs(settings: Settings, _: Reader) -> dict[str, Any]:
    """The model specs in MODELS_DIR (retrainable by name), with the essentials of each."""
    specs: list[dict[str, Any]] = []
    for path in sorted(settings.models_dir.glob("*.yaml")):
        try:
            spec = resolve_spec(settings.models_dir, path.stem)
        except (ValidationError, ValueError) as exc:
            specs.append({"name": path.stem, "error": str(exc).splitlines()[0]})
            continue
        assert spec.metric is not None
        specs.append({"name": spec.name, "task": spec.task, "description": spec.description,
                      "data_uri": spec.data.uri, "metric": spec.metric.model_dump(), "schedule": spec.schedule,
                      "candidates": [c.label for c in spec.candidates or []]})
    return {"specs": specs}
