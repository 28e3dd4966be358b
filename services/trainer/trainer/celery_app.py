"""The Celery application: ``celery -A trainer.celery_app worker`` / ``beat``.

Jobs survive worker crashes: a message is acknowledged only when its task has finished (``acks_late``), a
worker that dies hands its message back (``task_reject_on_worker_lost``), each worker takes one message at
a time (prefetch 1), and Redis redelivers an unacknowledged message after the visibility timeout, which must
be longer than the longest job. Every task is idempotent per job (see trainer.tasks).
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import setup_logging, task_postrun, task_prerun, worker_init, worker_process_init

from mlops_common.observability import bind_log_context, configure_logging
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
def _prepare_process(**_: object) -> None:
    """The worker's own MLflow user (and MLflow's telemetry off), for every pool process."""
    get_settings().prepare_process()


@setup_logging.connect
def _logging(**_: object) -> None:
    """Workers and beat log like the services (JSON lines with the job id), not with Celery's own format."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)


@task_prerun.connect
def _job_log_context(args: tuple[Any, ...] | None = None, kwargs: dict[str, Any] | None = None,
                     **_: object) -> None:
    """Every task takes the job id first: it goes on each line the task logs."""
    job_id = (kwargs or {}).get("job_id") or (args[0] if args else None)
    bind_log_context(job_id=job_id if isinstance(job_id, str) else None)


@task_postrun.connect
def _clear_log_context(**_: object) -> None:
    bind_log_context(job_id=None, model=None, version=None)
