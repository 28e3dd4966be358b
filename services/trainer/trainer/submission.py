"""Accepting a retrain request: resolve and check the spec, record the job, enqueue it. Shared by the
HTTP API, the alert webhooks and trainer-beat."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpx
import redis
from pydantic import ValidationError

from mlops_common.auth import Permission, Principal
from mlops_common.contracts import GatePolicy, PolicyView
from mlops_common.errors import ServiceError
from mlops_common.spec import ModelSpec, SpecNotFound, resolve_spec
from trainer import production
from trainer.candidates import SpecError, check_spec
from trainer.celery_app import app as celery
from trainer.datasets import DatasetError, DatasetNotFound, DatasetStore
from trainer.jobs import JobStore
from trainer.metrics import jobs_submitted
from trainer.settings import TrainerSettings

log = logging.getLogger(__name__)
RUN_JOB = "trainer.run_job"  # the task that runs a job (trainer.tasks.run_job)


class Rejected(ServiceError):
    """A request that cannot become a job; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail, status_code=status)


def describe_validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if p != "__root__")
        parts.append(f"{loc}: {err['msg']}" if loc else err["msg"])
    return "invalid spec: " + "; ".join(parts)


def non_finite(value: Any, path: str = "spec") -> str | None:
    """The dotted path of the first NaN or infinity in a JSON value, if any."""
    if isinstance(value, float) and not math.isfinite(value):
        return path
    items: Iterable[tuple[Any, Any]]
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = ((f"[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for key, item in items:
        found = non_finite(item, f"{path}{key}" if str(key).startswith("[") else f"{path}.{key}")
        if found:
            return found
    return None


def resolve(settings: TrainerSettings, datasets: DatasetStore, model_name: str,
            override: dict[str, Any] | None) -> ModelSpec:
    bad = non_finite(override or {})
    if bad:
        raise Rejected(422, f"{bad}: NaN and infinities are not allowed in a spec")
    try:
        spec = resolve_spec(settings.models_dir, model_name, override)
    except SpecNotFound as exc:
        raise Rejected(404, str(exc)) from exc
    except ValidationError as exc:
        raise Rejected(422, describe_validation(exc)) from exc
    except ValueError as exc:  # bad model name, unreadable spec file
        raise Rejected(422, str(exc)) from exc
    try:
        check_spec(spec)
        datasets.check_uri(spec.data.uri)
    except DatasetNotFound as exc:
        raise Rejected(422, str(exc)) from exc
    except (SpecError, DatasetError) as exc:
        raise Rejected(422, str(exc)) from exc
    return spec


def spec_policy(spec: ModelSpec) -> GatePolicy:
    assert spec.metric is not None
    return GatePolicy(metric=spec.metric.name, higher_is_better=spec.metric.higher_is_better,
                      threshold=spec.metric.threshold, margin=spec.metric.margin)


def _registry(settings: TrainerSettings, method: str, path: str, token: str, **kwargs: Any) -> httpx.Response:
    try:
        return httpx.request(method, f"{settings.registry_url.rstrip('/')}{path}", timeout=10,
                             headers={"Authorization": f"Bearer {token}"}, **kwargs)
    except httpx.HTTPError as exc:
        raise Rejected(503, f"registry-proxy is unreachable, so the gate policy cannot be checked: {exc}") from exc


def guard_policy(settings: TrainerSettings, spec: ModelSpec, override: dict[str, Any] | None,
                 principal: Principal, token: str | None) -> None:
    """A request that changes the gate policy (the spec's ``metric`` block) is refused unless its caller is an
    approver; an approver's change is recorded by registry-proxy as a policy change in that person's name."""
    if not override or "metric" not in override:
        return
    wanted = spec_policy(spec)
    answer = _registry(settings, "GET", f"/models/{spec.name}/policy", settings.registry_service_token)
    if answer.status_code == 404:
        return  # a new model: its first gate stores this as its policy
    if answer.status_code != 200:
        raise Rejected(503, f"registry-proxy answered {answer.status_code} for the gate policy of {spec.name!r}")
    current = PolicyView.model_validate(answer.json())
    if GatePolicy(**current.model_dump(include=set(GatePolicy.model_fields))) == wanted:
        return
    if not principal.can(Permission.APPROVE) or not token:
        raise Rejected(403, f"the request changes the gate policy of {spec.name!r} ({current.metric} "
                            f"threshold {current.threshold}, margin {current.margin}, revision {current.revision}); "
                            f"the policy is owned by registry-proxy and only an approver may change it "
                            f"(PUT /models/{spec.name}/policy); principal {principal.name!r} has role "
                            f"{principal.role}. Leave 'metric' out of the spec to train under the current policy.")
    changed = _registry(settings, "PUT", f"/models/{spec.name}/policy", token,
                        json={**wanted.model_dump(), "reason": f"set with POST /retrain by {principal.name}"})
    if changed.status_code != 200:
        raise Rejected(changed.status_code if changed.status_code in (403, 422) else 503,
                       f"registry-proxy refused the policy change: {changed.text[:300]}")


@dataclass
class Submitted:
    job: dict[str, Any]
    created: bool


def submit(settings: TrainerSettings, store: JobStore, datasets: DatasetStore, model_name: str,
           override: dict[str, Any] | None = None, idempotency_key: str | None = None,
           source: str = "api", principal: Principal | None = None, token: str | None = None,
           retrain_data: bool = False) -> Submitted:
    """Resolves and checks the spec, records the job and enqueues it. ``principal`` is who asked (None for the
    stack's own schedule); it is recorded on the job and the gate names it. ``retrain_data``: a retrain the stack
    starts by itself (an alert; the schedule when ``retrain.scheduled``) trains on what ``retrain.data`` says."""
    spec = resolve(settings, datasets, model_name, override)
    if retrain_data and (source != "schedule" or spec.retrain.scheduled) and spec.retrain.data != "reference":
        spec.data.uri = production.uri_for(spec)
        try:
            datasets.check_uri(spec.data.uri)
        except DatasetError as exc:
            raise Rejected(422, f"retrain.data={spec.retrain.data}: {exc}") from exc
    if principal is not None:
        guard_policy(settings, spec, override, principal, token)
    try:
        job, created = store.create(model_name, spec.model_dump(mode="json"), source=source,
                                    idempotency_key=idempotency_key,
                                    requested_by=principal.name if principal else None)
    except redis.RedisError as exc:
        raise Rejected(503, f"the job store (Redis at {redact(settings.redis_url)}) is unreachable: {exc}") from exc
    if not created:
        return Submitted(job, False)
    try:  # by name: the API needs the Celery app, not the tasks (and trainer.tasks imports this module)
        celery.send_task(RUN_JOB, (job["job_id"],), retry=True,
                         retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1})
    except Exception as exc:  # kombu raises OperationalError and friends when the broker is down
        log.warning("could not enqueue job %s: %s", job["job_id"], exc)
        try:
            store.forget(job)
        except redis.RedisError:
            pass
        raise Rejected(503, f"the job queue (broker at {redact(settings.celery_broker_url)}) is unreachable: "
                            f"{type(exc).__name__}: {exc}; nothing was queued, retry later") from exc
    jobs_submitted().labels(model_name).inc()
    return Submitted(job, True)


def redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
