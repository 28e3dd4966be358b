"""POST /alerts/grafana and /alerts/alertmanager: alert webhooks that retrain a model (see trainer.alerting)."""

from __future__ import annotations

from fastapi import APIRouter

from mlops_common.auth import Trainer
from trainer.alerting import handle_notification
from trainer.deps import Datasets, Settings, Store
from trainer.schemas import AlertAnswer, Notification

router = APIRouter(prefix="/alerts", tags=["alerts"])


@router.post("/grafana", status_code=202, response_model=AlertAnswer)
def grafana(note: Notification, settings: Settings, store: Store, datasets: Datasets,
            principal: Trainer) -> AlertAnswer:
    return handle_notification("grafana", note, settings, store, datasets, principal)


@router.post("/alertmanager", status_code=202, response_model=AlertAnswer)
def alertmanager(note: Notification, settings: Settings, store: Store, datasets: Datasets,
                 principal: Trainer) -> AlertAnswer:
    return handle_notification("alertmanager", note, settings, store, datasets, principal)
