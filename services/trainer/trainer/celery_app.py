"""The Celery application: ``celery -A trainer.celery_app worker`` / ``beat``.

Jobs survive worker crashes: a message is acknowledged only when its task has finished (``acks_late``), a
worker that dies hands its message back (``task_reject_on_worker_lost``), each worker takes one message at
a time (prefetch 1), and Redis redelivers an unacknowledged message after the visibility timeout, which must
be longer than the longest job. Every task is idempotent per job (see trainer.tasks).
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_process_init

from trainer.settings import TrainerSettings, get_settings


def celery_config(settings: TrainerSettings) -> dict[str, Any]:
    return {
        "broker_url": settings.celery_broker_url,
        "result_backend": settings.celery_result_backend,
        "task_default_queue": settings.celery_queue,
        "task_routes": {"trainer.*": {"queue": settings.celery_queue}},
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": {"visibility_timeout": settings.celery_visibility_timeout},
        "result_backend_transport_options": {"visibility_timeout": settings.celery_visibility_timeout},
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": 3,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_expires": 24 * 3600,
        "task_track_started": True,
        "worker_send_task_events": False,
        "timezone": "UTC",
        "beat_schedule": {
            "scheduled-retrains": {"task": "trainer.schedule_tick", "schedule": settings.schedule_tick_seconds,
                                   # a tick nobody ran in time is dropped: the next one sees the same slots
                                   "options": {"expires": max(settings.schedule_tick_seconds, 5.0)}},
        },
    }


app = Celery("trainer", include=["trainer.tasks"])


@app.on_configure.connect
def _configure(sender: Celery, **_: object) -> None:
    """The settings are read when the app is first used (a worker starting, a job enqueued), not at import."""
    sender.config_from_object(celery_config(get_settings()))


@worker_init.connect
@worker_process_init.connect
def _mlflow_credentials(**_: object) -> None:
    """The worker's own MLflow user, for every pool process."""
    get_settings().apply_mlflow_credentials()
