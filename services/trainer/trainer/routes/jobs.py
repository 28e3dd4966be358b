"""POST /retrain, GET /jobs, GET /jobs/{id}, GET /specs."""

from __future__ import annotations

from fastapi import APIRouter, Query, Response

from mlops_common.auth import Reader, Trainer
from mlops_common.errors import NotFound
from trainer.deps import CallerToken, Datasets, Settings, Store
from trainer.jobs import Status
from trainer.schemas import Accepted, JobDetail, JobList, RetrainRequest, SpecList
from trainer.specs import spec_summaries
from trainer.submission import submit

router = APIRouter(tags=["jobs"])
MAX_JOB_ID = 64


@router.post("/retrain", status_code=202, response_model=Accepted,
             responses={200: {"model": Accepted, "description": "the job this idempotency key already made"}})
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


@router.get("/jobs", response_model=JobList)
def list_jobs(store: Store, _: Reader, model_name: str | None = None, status: Status | None = None,
              limit: int = Query(50, ge=1, le=500)) -> JobList:
    return JobList.model_validate({"jobs": store.list(model_name=model_name, status=status, limit=limit)})


@router.get("/jobs/{job_id}", response_model=JobDetail)
def get_job(job_id: str, store: Store, _: Reader) -> JobDetail:
    """The job, with the resolved spec it trains (the list leaves the spec out)."""
    raw = store.raw(job_id) if len(job_id) <= MAX_JOB_ID else None
    if raw is None:
        raise NotFound(f"no job {job_id!r}")
    return JobDetail.model_validate({**store.public(raw), "spec": raw.get("spec")})


@router.get("/specs", response_model=SpecList)
def list_specs(settings: Settings, _: Reader) -> SpecList:
    """The model specs in MODELS_DIR (retrainable by name), with the essentials of each."""
    return SpecList(specs=spec_summaries(settings.models_dir))
