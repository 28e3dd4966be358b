"""Alert webhooks (Grafana and Alertmanager): a firing alert labelled ``model_name`` and ``retrain="true"``
enqueues a retrain of that model, at most once per alert group within ALERT_COOLDOWN_SECONDS; resolved
alerts, and alerts not labelled for retraining, are ignored."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import redis
from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from mlops_common.auth import Principal, Trainer
from mlops_common.spec import spec_path
from trainer.deps import Datasets, Settings, Store
from trainer.jobs import PREFIX
from trainer.metrics import ALERT_RETRAINS
from trainer.submission import Rejected, submit

log = logging.getLogger(__name__)
router = APIRouter(prefix="/alerts", tags=["alerts"])


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


def _last_trained_spec(settings: Any, store: Any, name: str) -> dict[str, Any] | None:
    """For a model created through the API (no models/<name>.yaml), the spec its last good job used."""
    if spec_path(settings.models_dir, name).is_file():
        return None
    for job in store.list(model_name=name, status="succeeded", limit=1):
        record = store.raw(job["job_id"]) or {}
        # The gate policy is registry-proxy's: an alert retrains under the policy in force.
        return {k: v for k, v in (record.get("spec") or {}).items() if k not in ("name", "metric")} or None
    return None


def _handle(source: str, note: Notification, settings: Settings, store: Store, datasets: Datasets,
            principal: Principal) -> dict[str, Any]:
    group = note.groupKey or ",".join(sorted(a.fingerprint or "" for a in note.alerts))
    models: list[str] = []
    ignored = 0
    for alert in note.alerts:
        name = alert.labels.get("model_name") or note.commonLabels.get("model_name")
        wants_retrain = (alert.labels.get("retrain") or note.commonLabels.get("retrain")) == "true"
        if alert.status != "firing" or not name or not wants_retrain:
            ignored += 1
            continue
        if name not in models:
            models.append(name)
    results = []
    for name in models:
        key = f"{PREFIX}alert:{name}:{hashlib.sha256(group.encode()).hexdigest()[:24]}"
        try:
            fresh = store.r.set(key, "1", nx=True, ex=max(settings.alert_cooldown_seconds, 1))
        except redis.RedisError as exc:
            raise HTTPException(503, f"the job store (Redis) is unreachable: {exc}") from exc
        if not fresh:
            ALERT_RETRAINS.labels(name, "cooldown").inc()
            results.append({"model_name": name, "outcome": "cooldown", "job_id": None,
                            "detail": f"this alert group already triggered a retrain in the last "
                                      f"{settings.alert_cooldown_seconds}s"})
            continue
        try:
            override = _last_trained_spec(settings, store, name)
            submitted = submit(settings, store, datasets, name, override, source=f"alert:{source}",
                               principal=principal)
        except Rejected as exc:
            store.r.delete(key)
            ALERT_RETRAINS.labels(name, "rejected").inc()
            results.append({"model_name": name, "outcome": "rejected", "job_id": None, "detail": exc.detail})
            continue
        ALERT_RETRAINS.labels(name, "enqueued").inc()
        log.info("alert from %s (group %s) enqueued retrain job %s of %s", source, group, submitted.job["job_id"], name)
        results.append({"model_name": name, "outcome": "enqueued", "job_id": submitted.job["job_id"], "detail": None})
    return {"retrains": results, "ignored_alerts": ignored}


@router.post("/grafana", status_code=202)
def grafana(note: Notification, settings: Settings, store: Store, datasets: Datasets,
            principal: Trainer) -> dict[str, Any]:
    return _handle("grafana", note, settings, store, datasets, principal)


@router.post("/alertmanager", status_code=202)
def alertmanager(note: Notification, settings: Settings, store: Store, datasets: Datasets,
                 principal: Trainer) -> dict[str, Any]:
    return _handle("alertmanager", note, settings, store, datasets, principal)
