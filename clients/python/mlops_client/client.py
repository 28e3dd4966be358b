"""``Client`` (blocking) and ``AsyncClient`` (asyncio): one method per operation of the stack's three APIs.

    from mlops_client import Client

    with Client() as mlops:                       # URLs from $MLOPS_*_URL, token from $MLOPS_TOKEN
        job = mlops.wait_for_job(mlops.retrain("sms-spam").job_id, on_progress=print)
        print(mlops.predict(["Lunch tomorrow?"], model="sms-spam").predictions)

Base URLs come from the arguments, else ``MLOPS_PREDICTOR_URL``, ``MLOPS_TRAINER_URL``, ``MLOPS_REGISTRY_URL``,
else the local stack's ports (8000, 8002, 8001). The token from ``token=``, else ``MLOPS_TOKEN``, else
``REGISTRY_ADMIN_TOKEN``. Idempotent calls (reads, predictions, a retrain with an idempotency key) are retried
on 503 and on connection errors with exponential backoff, waiting what ``Retry-After`` asks when the server
says; every failure raises an :class:`~mlops_client.errors.MlopsError` carrying the status and the reason.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx

from mlops_client import _calls as c
from mlops_client._core import (
    RETRY_ERRORS,
    RETRY_STATUSES,
    Call,
    Config,
    Service,
    UploadProgress,
    unreachable,
    upload_files,
)
from mlops_client.errors import JobFailedError, JobTimeoutError
from mlops_client.models import (
    AuditPage,
    Canary,
    Dataset,
    Decision,
    DoraReport,
    FeedbackResult,
    Identity,
    InferResponse,
    Job,
    Model,
    ModelDetail,
    NewToken,
    Prediction,
    Principal,
    PrincipalDetail,
    PromoteResult,
    RetrainAccepted,
    RollbackResult,
    Rollout,
    ServedModel,
    ServedModelInfo,
    Shadow,
    Spec,
    Token,
    Version,
)

T = TypeVar("T")
JobProgress = Callable[[Job], None]
"""Called with the job each time it is polled: ``job.stage``, ``job.percent``, ``job.status``."""
SERVICES: tuple[Service, ...] = ("predictor", "trainer", "registry")


class _Base:
    def __init__(self, *, predictor_url: str | None = None, trainer_url: str | None = None,
                 registry_url: str | None = None, token: str | None = None, timeout: float = 30.0,
                 retries: int = 3, backoff: float = 0.5, max_backoff: float = 30.0) -> None:
        self.config = Config.build(predictor_url=predictor_url, trainer_url=trainer_url, registry_url=registry_url,
                                   token=token, timeout=timeout, retries=retries, backoff=backoff,
                                   max_backoff=max_backoff)

    def url(self, service: Service) -> str:
        return self.config.urls[service]


class Client(_Base):
    """The blocking client. Use it as a context manager, or call :meth:`close`."""

    def __init__(self, *, predictor_url: str | None = None, trainer_url: str | None = None,
                 registry_url: str | None = None, token: str | None = None, timeout: float = 30.0,
                 retries: int = 3, backoff: float = 0.5, max_backoff: float = 30.0) -> None:
        super().__init__(predictor_url=predictor_url, trainer_url=trainer_url, registry_url=registry_url,
                         token=token, timeout=timeout, retries=retries, backoff=backoff, max_backoff=max_backoff)
        self._http = {s: httpx.Client(base_url=self.url(s), timeout=self.config.timeout,
                                      headers=self.config.headers()) for s in SERVICES}

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for http in self._http.values():
            http.close()

    def _run(self, call: Call[T]) -> T:
        http = self._http[call.service]
        attempts = self.config.retries + 1 if call.idempotent else 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = http.request(call.method, call.path, **call.request())
            except RETRY_ERRORS as exc:
                if last:
                    raise unreachable(exc, call, self.url(call.service)) from exc
                time.sleep(self.config.delay(attempt, None))
                continue
            if response.status_code in RETRY_STATUSES and not last:
                time.sleep(self.config.delay(attempt, response))
                continue
            return call.read(response)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    # predictor

    def predict(self, instances: list[Any], *, model: str | None = None, version: str | int | None = None,
                probabilities: bool = False) -> Prediction:
        """Scores ``instances`` (texts, or records of feature columns): with the default model's production
        version (``/predict``), the named model's, or one version of it (loaded on first use: retried while
        the predictor answers 503 + Retry-After)."""
        return self._run(c.predict(instances, model, version, probabilities))

    def infer(self, model: str, inputs: list[dict[str, Any]], *, version: str | int | None = None,
              outputs: list[str] | None = None, parameters: dict[str, Any] | None = None,
              request_id: str | None = None) -> InferResponse:
        """Open Inference Protocol v2: ``inputs`` are tensors ``{"name", "datatype", "shape", "data"}``."""
        return self._run(c.infer(model, inputs, version, outputs, parameters, request_id))

    def feedback(self, request_id: str, *, label: str | int | bool | None = None, value: float | None = None,
                 index: int | None = None, model: str | None = None) -> FeedbackResult:
        """The ground truth of an earlier prediction: ``label`` for classifiers, ``value`` for regressors."""
        return self._run(c.feedback(request_id, label, value, index, model))

    def served_models(self) -> list[ServedModel]:
        return self._run(c.served_models())

    def served_model(self, model: str | None = None) -> ServedModelInfo:
        return self._run(c.served_model(model))

    # trainer

    def upload_dataset(self, path: str | Path, *, on_progress: UploadProgress | None = None) -> Dataset:
        """Uploads a CSV or Parquet file as a content-addressed snapshot; ``on_progress(sent, total)`` as it goes."""
        path = Path(path)
        with path.open("rb") as handle:
            return self._run(c.upload_dataset(upload_files(path, handle, on_progress)))

    def datasets(self) -> list[Dataset]:
        return self._run(c.datasets())

    def dataset(self, dataset_id: str) -> Dataset:
        return self._run(c.dataset(dataset_id))

    def retrain(self, model: str, *, spec: dict[str, Any] | None = None,
                idempotency_key: str | None = None) -> RetrainAccepted:
        """Enqueues a retrain; ``spec`` is merged over the model's spec file."""
        return self._run(c.retrain(model, spec, idempotency_key))

    def job(self, job_id: str) -> Job:
        return self._run(c.job(job_id))

    def jobs(self, *, model: str | None = None, status: str | None = None, limit: int = 50) -> list[Job]:
        return self._run(c.jobs(model, status, limit))

    def wait_for_job(self, job_id: str, *, on_progress: JobProgress | None = None, poll: float = 1.0,
                     timeout: float | None = None, raise_on_failure: bool = True) -> Job:
        """Polls the job until it ends, calling ``on_progress(job)`` each time; raises
        :class:`JobFailedError` if it failed (unless told not to), :class:`JobTimeoutError` after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if on_progress is not None:
                on_progress(job)
            if job.finished:
                return _finished(job, raise_on_failure)
            if deadline is not None and time.monotonic() >= deadline:
                raise JobTimeoutError(job, timeout or 0)
            time.sleep(poll)

    def specs(self) -> list[Spec]:
        return self._run(c.specs())

    # registry-proxy

    def models(self) -> list[Model]:
        return self._run(c.models())

    def model(self, name: str, *, limit: int = 50) -> ModelDetail:
        return self._run(c.model(name, limit))

    def version(self, name: str, version: str | int) -> Version:
        return self._run(c.version(name, version))

    def promote(self, name: str, version: str | int, *, reason: str = "") -> PromoteResult:
        return self._run(c.promote(name, version, reason))

    def rollback(self, name: str, *, reason: str = "") -> RollbackResult:
        return self._run(c.rollback(name, reason))

    def decisions(self, *, status: str | None = None, model: str | None = None, limit: int = 100) -> list[Decision]:
        return self._run(c.decisions(status, model, limit))

    def decision(self, decision_id: int) -> Decision:
        return self._run(c.decision(decision_id))

    def approve(self, decision_id: int, *, comment: str = "") -> Decision:
        return self._run(c.decide(decision_id, True, comment))

    def reject(self, decision_id: int, *, comment: str = "") -> Decision:
        return self._run(c.decide(decision_id, False, comment))

    def start_canary(self, name: str, version: str | int, *, steps: list[int] | None = None,
                     interval: str | None = None, require_approval: bool | None = None, reason: str = "",
                     max_error_ratio: float | None = None, max_p99_seconds: float | None = None,
                     max_quality_drop: float | None = None) -> Canary:
        thresholds = {"max_error_ratio": max_error_ratio, "max_p99_seconds": max_p99_seconds,
                      "max_quality_drop": max_quality_drop}
        return self._run(c.start_canary(name, version, steps, interval, require_approval, reason, thresholds))

    def canary(self, name: str) -> Canary:
        return self._run(c.canary(name))

    def pause_canary(self, name: str, *, reason: str = "") -> Canary:
        return self._run(c.canary_action(name, "pause", reason))

    def resume_canary(self, name: str, *, reason: str = "") -> Canary:
        return self._run(c.canary_action(name, "resume", reason))

    def abort_canary(self, name: str, *, reason: str = "") -> Canary:
        return self._run(c.canary_action(name, "abort", reason))

    def approve_canary(self, name: str, *, reason: str = "") -> Canary:
        return self._run(c.canary_action(name, "approve", reason))

    def start_shadow(self, name: str, version: str | int, share: int = 100, reason: str | None = None) -> Shadow:
        """Mirrors ``share`` % of the model's live requests to ``version`` off the request path (role approver):
        its answers are compared with production's and never returned. One shadow at a time (else 409)."""
        return self._run(c.start_shadow(name, version, share, reason or ""))

    def shadow(self, name: str) -> Shadow:
        """The model's latest shadow period (running or ended) with its live evidence; 404 if it never had one."""
        return self._run(c.shadow(name))

    def stop_shadow(self, name: str, reason: str | None = None) -> Shadow:
        """Ends the running shadow (role approver); 409 when none runs."""
        return self._run(c.stop_shadow(name, reason or ""))

    def rollout(self, name: str) -> Rollout:
        return self._run(c.rollout(name))

    def audit(self, *, model: str | None = None, action: str | None = None, limit: int = 50, offset: int = 0,
              before_id: int | None = None) -> AuditPage:
        return self._run(c.audit(model, action, limit, offset, before_id))

    def dora(self, name: str, *, window_days: float | None = None) -> DoraReport:
        return self._run(c.dora(name, window_days))

    def whoami(self) -> Identity:
        return self._run(c.whoami())

    def principals(self) -> list[Principal]:
        return self._run(c.principals())

    def principal(self, name: str) -> PrincipalDetail:
        return self._run(c.principal(name))

    def create_principal(self, name: str, role: str, *, kind: str = "person") -> Principal:
        return self._run(c.create_principal(name, role, kind))

    def disable_principal(self, name: str) -> Principal:
        return self._run(c.disable_principal(name))

    def create_token(self, name: str, *, description: str | None = None,
                     expires_in_days: float | None = None) -> NewToken:
        return self._run(c.create_token(name, description, expires_in_days))

    def revoke_token(self, name: str, token_id: int) -> Token:
        return self._run(c.revoke_token(name, token_id))


class AsyncClient(_Base):
    """The asyncio client: the same methods as :class:`Client`, to await. Use ``async with``, or ``aclose``."""

    def __init__(self, *, predictor_url: str | None = None, trainer_url: str | None = None,
                 registry_url: str | None = None, token: str | None = None, timeout: float = 30.0,
                 retries: int = 3, backoff: float = 0.5, max_backoff: float = 30.0) -> None:
        super().__init__(predictor_url=predictor_url, trainer_url=trainer_url, registry_url=registry_url,
                         token=token, timeout=timeout, retries=retries, backoff=backoff, max_backoff=max_backoff)
        self._http = {s: httpx.AsyncClient(base_url=self.url(s), timeout=self.config.timeout,
                                           headers=self.config.headers()) for s in SERVICES}

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for http in self._http.values():
            await http.aclose()

    async def _run(self, call: Call[T]) -> T:
        http = self._http[call.service]
        attempts = self.config.retries + 1 if call.idempotent else 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = await http.request(call.method, call.path, **call.request())
            except RETRY_ERRORS as exc:
                if last:
                    raise unreachable(exc, call, self.url(call.service)) from exc
                await asyncio.sleep(self.config.delay(attempt, None))
                continue
            if response.status_code in RETRY_STATUSES and not last:
                await asyncio.sleep(self.config.delay(attempt, response))
                continue
            return call.read(response)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    # predictor

    async def predict(self, instances: list[Any], *, model: str | None = None, version: str | int | None = None,
                      probabilities: bool = False) -> Prediction:
        return await self._run(c.predict(instances, model, version, probabilities))

    async def infer(self, model: str, inputs: list[dict[str, Any]], *, version: str | int | None = None,
                    outputs: list[str] | None = None, parameters: dict[str, Any] | None = None,
                    request_id: str | None = None) -> InferResponse:
        return await self._run(c.infer(model, inputs, version, outputs, parameters, request_id))

    async def feedback(self, request_id: str, *, label: str | int | bool | None = None,
                       value: float | None = None, index: int | None = None,
                       model: str | None = None) -> FeedbackResult:
        return await self._run(c.feedback(request_id, label, value, index, model))

    async def served_models(self) -> list[ServedModel]:
        return await self._run(c.served_models())

    async def served_model(self, model: str | None = None) -> ServedModelInfo:
        return await self._run(c.served_model(model))

    # trainer

    async def upload_dataset(self, path: str | Path, *, on_progress: UploadProgress | None = None) -> Dataset:
        path = Path(path)
        with path.open("rb") as handle:
            return await self._run(c.upload_dataset(upload_files(path, handle, on_progress)))

    async def datasets(self) -> list[Dataset]:
        return await self._run(c.datasets())

    async def dataset(self, dataset_id: str) -> Dataset:
        return await self._run(c.dataset(dataset_id))

    async def retrain(self, model: str, *, spec: dict[str, Any] | None = None,
                      idempotency_key: str | None = None) -> RetrainAccepted:
        return await self._run(c.retrain(model, spec, idempotency_key))

    async def job(self, job_id: str) -> Job:
        return await self._run(c.job(job_id))

    async def jobs(self, *, model: str | None = None, status: str | None = None, limit: int = 50) -> list[Job]:
        return await self._run(c.jobs(model, status, limit))

    async def wait_for_job(self, job_id: str, *, on_progress: Callable[[Job], Awaitable[None] | None] | None = None,
                           poll: float = 1.0, timeout: float | None = None, raise_on_failure: bool = True) -> Job:
        """As :meth:`Client.wait_for_job`; ``on_progress`` may be a plain function or a coroutine function."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = await self.job(job_id)
            if on_progress is not None:
                result = on_progress(job)
                if result is not None:
                    await result
            if job.finished:
                return _finished(job, raise_on_failure)
            if deadline is not None and time.monotonic() >= deadline:
                raise JobTimeoutError(job, timeout or 0)
            await asyncio.sleep(poll)

    async def specs(self) -> list[Spec]:
        return await self._run(c.specs())

    # registry-proxy

    async def models(self) -> list[Model]:
        return await self._run(c.models())

    async def model(self, name: str, *, limit: int = 50) -> ModelDetail:
        return await self._run(c.model(name, limit))

    async def version(self, name: str, version: str | int) -> Version:
        return await self._run(c.version(name, version))

    async def promote(self, name: str, version: str | int, *, reason: str = "") -> PromoteResult:
        return await self._run(c.promote(name, version, reason))

    async def rollback(self, name: str, *, reason: str = "") -> RollbackResult:
        return await self._run(c.rollback(name, reason))

    async def decisions(self, *, status: str | None = None, model: str | None = None,
                        limit: int = 100) -> list[Decision]:
        return await self._run(c.decisions(status, model, limit))

    async def decision(self, decision_id: int) -> Decision:
        return await self._run(c.decision(decision_id))

    async def approve(self, decision_id: int, *, comment: str = "") -> Decision:
        return await self._run(c.decide(decision_id, True, comment))

    async def reject(self, decision_id: int, *, comment: str = "") -> Decision:
        return await self._run(c.decide(decision_id, False, comment))

    async def start_canary(self, name: str, version: str | int, *, steps: list[int] | None = None,
                           interval: str | None = None, require_approval: bool | None = None, reason: str = "",
                           max_error_ratio: float | None = None, max_p99_seconds: float | None = None,
                           max_quality_drop: float | None = None) -> Canary:
        thresholds = {"max_error_ratio": max_error_ratio, "max_p99_seconds": max_p99_seconds,
                      "max_quality_drop": max_quality_drop}
        return await self._run(c.start_canary(name, version, steps, interval, require_approval, reason, thresholds))

    async def canary(self, name: str) -> Canary:
        return await self._run(c.canary(name))

    async def pause_canary(self, name: str, *, reason: str = "") -> Canary:
        return await self._run(c.canary_action(name, "pause", reason))

    async def resume_canary(self, name: str, *, reason: str = "") -> Canary:
        return await self._run(c.canary_action(name, "resume", reason))

    async def abort_canary(self, name: str, *, reason: str = "") -> Canary:
        return await self._run(c.canary_action(name, "abort", reason))

    async def approve_canary(self, name: str, *, reason: str = "") -> Canary:
        return await self._run(c.canary_action(name, "approve", reason))

    async def start_shadow(self, name: str, version: str | int, share: int = 100,
                           reason: str | None = None) -> Shadow:
        return await self._run(c.start_shadow(name, version, share, reason or ""))

    async def shadow(self, name: str) -> Shadow:
        return await self._run(c.shadow(name))

    async def stop_shadow(self, name: str, reason: str | None = None) -> Shadow:
        return await self._run(c.stop_shadow(name, reason or ""))

    async def rollout(self, name: str) -> Rollout:
        return await self._run(c.rollout(name))

    async def audit(self, *, model: str | None = None, action: str | None = None, limit: int = 50,
                    offset: int = 0, before_id: int | None = None) -> AuditPage:
        return await self._run(c.audit(model, action, limit, offset, before_id))

    async def dora(self, name: str, *, window_days: float | None = None) -> DoraReport:
        return await self._run(c.dora(name, window_days))

    async def whoami(self) -> Identity:
        return await self._run(c.whoami())

    async def principals(self) -> list[Principal]:
        return await self._run(c.principals())

    async def principal(self, name: str) -> PrincipalDetail:
        return await self._run(c.principal(name))

    async def create_principal(self, name: str, role: str, *, kind: str = "person") -> Principal:
        return await self._run(c.create_principal(name, role, kind))

    async def disable_principal(self, name: str) -> Principal:
        return await self._run(c.disable_principal(name))

    async def create_token(self, name: str, *, description: str | None = None,
                           expires_in_days: float | None = None) -> NewToken:
        return await self._run(c.create_token(name, description, expires_in_days))

    async def revoke_token(self, name: str, token_id: int) -> Token:
        return await self._run(c.revoke_token(name, token_id))


def _finished(job: Job, raise_on_failure: bool) -> Job:
    if job.status == "failed" and raise_on_failure:
        raise JobFailedError(job)
    return job

