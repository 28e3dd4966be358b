"""Every route the client calls, as a :class:`~mlops_client._core.Call`: path, body and answer type, written once
for the sync and the async client."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from mlops_client._core import Call, call
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


def seg(value: object) -> str:
    """A path segment, quoted."""
    return quote(str(value), safe="")


def reason(text: str) -> dict[str, Any] | None:
    return {"reason": text} if text else None


# predictor

def predict(instances: list[Any], model: str | None, version: str | int | None,
            probabilities: bool) -> Call[Prediction]:
    if version is not None and model is None:
        raise ValueError("a version needs the model's name")
    path = "/predict" if model is None else f"/models/{seg(model)}/predict"
    if version is not None:
        path = f"/models/{seg(model)}/versions/{seg(version)}/predict"
    body: dict[str, Any] = {"instances": instances}
    if probabilities:
        body["probabilities"] = True
    # Scoring changes nothing but the feedback window's request id: safe to send again.
    return call("predictor", "POST", path, Prediction, json=body, idempotent=True)


def infer(model: str, inputs: list[dict[str, Any]], version: str | int | None, outputs: list[str] | None,
          parameters: dict[str, Any] | None, request_id: str | None) -> Call[InferResponse]:
    path = f"/v2/models/{seg(model)}" + (f"/versions/{seg(version)}" if version is not None else "") + "/infer"
    body: dict[str, Any] = {"inputs": inputs}
    if outputs is not None:
        body["outputs"] = [{"name": name} for name in outputs]
    if parameters:
        body["parameters"] = parameters
    if request_id:
        body["id"] = request_id
    return call("predictor", "POST", path, InferResponse, json=body, idempotent=True)


def feedback(request_id: str, label: str | int | bool | None, value: float | None, index: int | None,
             model: str | None) -> Call[FeedbackResult]:
    if (label is None) == (value is None):
        raise ValueError("give the true label (classifiers) or the true value (regressors)")
    body: dict[str, Any] = {"request_id": request_id}
    body.update({k: v for k, v in {"label": label, "value": value, "index": index}.items() if v is not None})
    path = "/feedback" if model is None else f"/models/{seg(model)}/feedback"
    return call("predictor", "POST", path, FeedbackResult, json=body)


def served_models() -> Call[list[ServedModel]]:
    return call("predictor", "GET", "/models", list[ServedModel], key="models")


def served_model(model: str | None) -> Call[ServedModelInfo]:
    return call("predictor", "GET", "/model" if model is None else f"/models/{seg(model)}", ServedModelInfo)


# trainer

def datasets() -> Call[list[Dataset]]:
    return call("trainer", "GET", "/datasets", list[Dataset], key="datasets")


def dataset(dataset_id: str) -> Call[Dataset]:
    return call("trainer", "GET", f"/datasets/{seg(dataset_id)}", Dataset)


def upload_dataset(files: dict[str, Any]) -> Call[Dataset]:
    return call("trainer", "POST", "/datasets", Dataset, files=files)


def retrain(model: str, spec: dict[str, Any] | None, idempotency_key: str | None) -> Call[RetrainAccepted]:
    body: dict[str, Any] = {"model_name": model}
    if spec:
        body["spec"] = spec
    if idempotency_key:
        body["idempotency_key"] = idempotency_key
    # With an idempotency key a second POST answers the job the first made: then it is safe to retry.
    return call("trainer", "POST", "/retrain", RetrainAccepted, json=body, idempotent=bool(idempotency_key))


def job(job_id: str) -> Call[Job]:
    return call("trainer", "GET", f"/jobs/{seg(job_id)}", Job)


def jobs(model: str | None, status: str | None, limit: int) -> Call[list[Job]]:
    return call("trainer", "GET", "/jobs", list[Job], key="jobs",
                params={"model_name": model, "status": status, "limit": limit})


def specs() -> Call[list[Spec]]:
    return call("trainer", "GET", "/specs", list[Spec], key="specs")


# registry-proxy: models, versions, governance

def models() -> Call[list[Model]]:
    return call("registry", "GET", "/models", list[Model])


def model(name: str, limit: int) -> Call[ModelDetail]:
    return call("registry", "GET", f"/models/{seg(name)}", ModelDetail, params={"limit": limit})


def version(name: str, version: str | int) -> Call[Version]:
    return call("registry", "GET", f"/models/{seg(name)}/versions/{seg(version)}", Version)


def promote(name: str, version: str | int, why: str) -> Call[PromoteResult]:
    return call("registry", "POST", f"/models/{seg(name)}/promote", PromoteResult,
                json={"version": str(version), "reason": why})


def rollback(name: str, why: str) -> Call[RollbackResult]:
    return call("registry", "POST", f"/models/{seg(name)}/rollback", RollbackResult, json=reason(why))


def decisions(status: str | None, model: str | None, limit: int) -> Call[list[Decision]]:
    return call("registry", "GET", "/decisions", list[Decision],
                params={"status": status, "model": model, "limit": limit})


def decision(decision_id: int) -> Call[Decision]:
    return call("registry", "GET", f"/decisions/{int(decision_id)}", Decision)


def decide(decision_id: int, approve: bool, comment: str) -> Call[Decision]:
    verb = "approve" if approve else "reject"
    return call("registry", "POST", f"/decisions/{int(decision_id)}/{verb}", Decision,
                json={"comment": comment} if comment else None)


def start_canary(name: str, version: str | int, steps: list[int] | None, interval: str | None,
                 require_approval: bool | None, why: str, thresholds: dict[str, float | None]) -> Call[Canary]:
    body: dict[str, Any] = {"version": str(version), "steps": steps, "interval": interval,
                            "require_approval": require_approval, **thresholds}
    body = {k: v for k, v in body.items() if v is not None}
    if why:
        body["reason"] = why
    return call("registry", "POST", f"/models/{seg(name)}/canary", Canary, json=body)


def canary(name: str) -> Call[Canary]:
    return call("registry", "GET", f"/models/{seg(name)}/canary", Canary)


def canary_action(name: str, action: str, why: str) -> Call[Canary]:
    return call("registry", "POST", f"/models/{seg(name)}/canary/{action}", Canary, json=reason(why))


def start_shadow(name: str, version: str | int, share: int, why: str) -> Call[Shadow]:
    body: dict[str, Any] = {"version": str(version), "share": share}
    if why:
        body["reason"] = why
    return call("registry", "POST", f"/models/{seg(name)}/shadow", Shadow, json=body)


def shadow(name: str) -> Call[Shadow]:
    return call("registry", "GET", f"/models/{seg(name)}/shadow", Shadow)


def stop_shadow(name: str, why: str) -> Call[Shadow]:
    return call("registry", "DELETE", f"/models/{seg(name)}/shadow", Shadow, json=reason(why), idempotent=False)


def rollout(name: str) -> Call[Rollout]:
    return call("registry", "GET", f"/models/{seg(name)}/rollout", Rollout)


def audit(model: str | None, action: str | None, limit: int, offset: int,
          before_id: int | None) -> Call[AuditPage]:
    return call("registry", "GET", "/audit", AuditPage,
                params={"model": model, "action": action, "limit": limit, "offset": offset or None,
                        "before_id": before_id})


def dora(name: str, window_days: float | None) -> Call[DoraReport]:
    return call("registry", "GET", f"/models/{seg(name)}/dora", DoraReport, params={"window_days": window_days})


# registry-proxy: identity

def whoami() -> Call[Identity]:
    return call("registry", "GET", "/auth/whoami", Identity)


def principals() -> Call[list[Principal]]:
    return call("registry", "GET", "/principals", list[Principal])


def principal(name: str) -> Call[PrincipalDetail]:
    return call("registry", "GET", f"/principals/{seg(name)}", PrincipalDetail)


def create_principal(name: str, role: str, kind: str) -> Call[Principal]:
    return call("registry", "POST", "/principals", Principal, json={"name": name, "role": role, "kind": kind})


def disable_principal(name: str) -> Call[Principal]:
    return call("registry", "DELETE", f"/principals/{seg(name)}", Principal, idempotent=False)


def create_token(name: str, description: str | None, expires_in_days: float | None) -> Call[NewToken]:
    body = {k: v for k, v in {"description": description, "expires_in_days": expires_in_days}.items()
            if v is not None}
    return call("registry", "POST", f"/principals/{seg(name)}/tokens", NewToken, json=body)


def revoke_token(name: str, token_id: int) -> Call[Token]:
    return call("registry", "DELETE", f"/principals/{seg(name)}/tokens/{int(token_id)}", Token, idempotent=False)
