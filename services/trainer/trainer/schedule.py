"""Cron schedules from the model specs, honoured by trainer-beat.

Every tick (SCHEDULE_TICK_SECONDS) looks at each spec file with a ``schedule``; when a cron slot has passed
since the last one handled, it submits a retrain whose idempotency key is the slot, so two beats (or a
restarted one) never retrain twice for the same slot. The job store remembers the last slot of each model.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from croniter import croniter

from mlops_common.spec import load_spec_file
from trainer.datasets import DatasetStore
from trainer.jobs import JobStore
from trainer.settings import TrainerSettings
from trainer.submission import Rejected, submit

log = logging.getLogger(__name__)


def scheduled_models(settings: TrainerSettings) -> dict[str, str]:
    out: dict[str, str] = {}
    for path in sorted(settings.models_dir.glob("*.yaml")):
        try:
            raw = load_spec_file(settings.models_dir, path.stem) or {}
        except Exception:  # one broken file must not stop the others
            log.exception("unreadable spec %s", path)
            continue
        if raw.get("schedule"):
            out[path.stem] = str(raw["schedule"])
    return out


def due_retrains(settings: TrainerSettings, store: JobStore, datasets: DatasetStore,
                 now: datetime | None = None) -> list[str]:
    """Submit the retrains whose cron slot has come; returns the job ids submitted."""
    now = now or datetime.now(UTC)
    submitted = []
    for name, expr in scheduled_models(settings).items():
        if not croniter.is_valid(expr):
            log.warning("model %s: invalid schedule %r", name, expr)
            continue
        slot = croniter(expr, now).get_prev(datetime)
        last = store.schedule_slot(name)
        if last is None:  # first sight: start counting from the current slot
            store.set_schedule_slot(name, slot)
            continue
        if last >= slot:
            continue
        store.set_schedule_slot(name, slot)
        try:
            result = submit(settings, store, datasets, name, None, idempotency_key=f"schedule:{slot.isoformat()}",
                            source="schedule", retrain_data=True)
        except Rejected as exc:
            log.warning("scheduled retrain of %s refused: %s", name, exc.detail)
            continue
        log.info("scheduled retrain of %s for slot %s: job %s", name, slot.isoformat(), result.job["job_id"])
        submitted.append(result.job["job_id"])
    return submitted
