"""Alert webhooks (Grafana and Alertmanager): a firing alert labelled ``model_name`` and ``retrain="true"``
enqueues a retrain of that model, at most once per alert group within ALERT_COOLDOWN_SECONDS, and, whatever
the group, at most once per ALERT_MODEL_COOLDOWN_SECONDS and ALERT_MAX_RETRAINS_PER_DAY times a day per model;
beyond those limits the alert is acknowledged ("skipped: ...") and nothing is queued. Resolved alerts, and
alerts not labelled for retraining, are ignored. The retrain trains on what the spec's ``retrain.data`` says
(the reference data, recent labelled production data, or both)."""

from __future__ import annotations

import logging
from typing import Any

import redis

from mlops_common.auth import Principal
from mlops_common.errors import Unavailable
from mlops_common.spec import spec_path
from trainer.datasets import DatasetStore
from trainer.jobs import JobStore
from trainer.metrics import alert_retrains
from trainer.schemas import AlertAnswer, AlertRetrain, Notification
from trainer.settings import TrainerSettings
from trainer.submission import Rejected, submit

log = logging.getLogger(__name__)


def last_trained_spec(settings: TrainerSettings, store: JobStore, name: str) -> dict[str, Any] | None:
    """For a model created through the API (no models/<name>.yaml), the spec its last good job used."""
    if spec_path(settings.models_dir, name).is_file():
        return None
    for job in store.list(model_name=name, status="succeeded", limit=1):
        record = store.raw(job["job_id"]) or {}
        # The gate policy is registry-proxy's: an alert retrains under the policy in force.
        return {k: v for k, v in (record.get("spec") or {}).items() if k not in ("name", "metric")} or None
    return None


def models_to_retrain(note: Notification) -> tuple[list[str], int]:
    """The models the notification's firing alerts ask to retrain (in order, once each), and how many alerts
    it holds that ask for nothing."""
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
    return models, ignored


def handle_notification(source: str, note: Notification, settings: TrainerSettings, store: JobStore,
                        datasets: DatasetStore, principal: Principal) -> AlertAnswer:
    group = note.groupKey or ",".join(sorted(a.fingerprint or "" for a in note.alerts))
    models, ignored = models_to_retrain(note)
    results = []
    for name in models:
        try:
            fresh = store.claim_alert(name, group, settings.alert_cooldown_seconds)
        except redis.RedisError as exc:
            raise Unavailable(f"the job store (Redis) is unreachable: {exc}") from exc
        if not fresh:
            alert_retrains().labels(name, "cooldown").inc()
            results.append(AlertRetrain(model_name=name, outcome="cooldown",
                                        detail=f"skipped: cool-down: this alert group already triggered a retrain "
                                               f"in the last {settings.alert_cooldown_seconds}s"))
            continue
        try:
            refusal = store.claim_model_alert(name, settings.alert_model_cooldown_seconds,
                                              settings.alert_max_retrains_per_day)
        except redis.RedisError as exc:
            store.release_alert(name, group)
            raise Unavailable(f"the job store (Redis) is unreachable: {exc}") from exc
        if refusal is not None:
            store.release_alert(name, group)  # the group may ask again once the model's limits allow it
            outcome = "cooldown" if refusal.startswith("skipped: cool-down") else "capped"
            alert_retrains().labels(name, outcome).inc()
            log.info("alert from %s for %s not queued: %s", source, name, refusal)
            results.append(AlertRetrain(model_name=name, outcome=outcome, detail=refusal))
            continue
        try:
            override = last_trained_spec(settings, store, name)
            submitted = submit(settings, store, datasets, name, override, source=f"alert:{source}",
                               principal=principal, retrain_data=True)
        except Rejected as exc:
            store.release_alert(name, group)
            store.release_model_alert(name)
            alert_retrains().labels(name, "rejected").inc()
            results.append(AlertRetrain(model_name=name, outcome="rejected", detail=exc.detail))
            continue
        store.confirm_model_alert(name)
        alert_retrains().labels(name, "enqueued").inc()
        job_id = submitted.job["job_id"]
        log.info("alert from %s (group %s) enqueued retrain job %s of %s", source, group, job_id, name)
        results.append(AlertRetrain(model_name=name, outcome="enqueued", job_id=job_id))
    return AlertAnswer(retrains=results, ignored_alerts=ignored)
