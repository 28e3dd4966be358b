"""POST /alerts/grafana and /alerts/alertmanager: alert webhooks that retrain a model (see trainer.alerting).

202 when the notification queued a retrain; 200 when it was acknowledged without queuing anything (resolved,
not for retraining, or skipped by the cool-downs and the daily cap: each retrain's ``detail`` says why)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from mlops_common.auth import Trainer
from trainer.alerting import handle_notification
from trainer.deps import Datasets, Settings, Store
from trainer.schemas import AlertAnswer, Notification

router = APIRouter(prefix="/alerts", tags=["alerts"])
RESPONSES: dict[int | str, dict[str, object]] = {200: {"model": AlertAnswer,
                                                       "description": "Acknowledged; nothing was queued"}}


def _status(answer: AlertAnswer, response: Response) -> AlertAnswer:
    response.status_code = 202 if any(r.outcome == "enqueued" for r in answer.retrains) else 200
    return answer


@router.post("/grafana", status_code=202, response_model=AlertAnswer, responses=RESPONSES)
def grafana(note: Notification, settings: Settings, store: Store, datasets: Datasets, principal: Trainer,
            response: Response) -> AlertAnswer:
    return _status(handle_notification("grafana", note, settings, store, datasets, principal), response)


@router.post("/alertmanager", status_code=202, response_model=AlertAnswer, responses=RESPONSES)
def alertmanager(note: Notification, settings: Settings, store: Store, datasets: Datasets, principal: Trainer,
                 response: Response) -> AlertAnswer:
    return _status(handle_notification("alertmanager", note, settings, store, datasets, principal), response)
