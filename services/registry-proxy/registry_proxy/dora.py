"""DORA figures for models, computed from the audit log.

- deployment frequency: production moves (``promote`` rows) in the window ÷ window days;
- lead time: median of (version reached production − retrain requested_at) over those promotions;
- change failure rate: rollbacks in the window ÷ changes in the window (promotions, and canaries that rolled
  back: such a canary served real traffic without ever being promoted);
- time to restore: median duration of the degraded periods that ended in the window. A degraded period
  starts when an incident is opened (POST /models/{name}/incidents) or, for a rollback with no open
  incident, when the rolled-back version reached production; it ends at the next rollback or promotion. A
  canary rolled back automatically was degraded from its start to its rollback.
"""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from registry_proxy.db import AuditEntry
from registry_proxy.mlflow_registry import Registry

DORA_ACTIONS = ("promote", "rollback", "incident")


def _parse(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _median(values: list[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def report(sessions: sessionmaker, registry: Registry, model: str, window_days: float) -> dict[str, Any]:
    """The figures of one model; 404 for a model neither the audit log nor MLflow knows."""
    with sessions() as session:
        if session.scalar(select(AuditEntry.id).where(AuditEntry.model_name == model).limit(1)) is None:
            registry.get_model(model)
        return compute(session, model, window_days)


def compute(session: Session, model: str, window_days: float, now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    start = now - timedelta(days=window_days)
    rows = session.scalars(
        select(AuditEntry)
        .where(AuditEntry.model_name == model, AuditEntry.action.in_(DORA_ACTIONS), AuditEntry.created_at <= now)
        .order_by(AuditEntry.created_at, AuditEntry.id)
    ).all()
    return from_history(list(rows), model, window_days, start, now)


def from_history(rows: list[AuditEntry], model: str, window_days: float, start: datetime,
                 now: datetime) -> dict[str, Any]:
    promotions = rollbacks = failed_canaries = 0
    lead_times: list[float] = []
    restores: list[float] = []
    promoted_at: dict[str, datetime] = {}
    degraded_since: datetime | None = None
    open_incidents = 0

    for row in rows:
        at = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
        in_window = at >= start
        if row.action == "incident":
            open_incidents += 1
            degraded_since = degraded_since or at
            continue
        if row.action == "rollback":
            canary = (row.details or {}).get("via") == "canary"
            if canary:
                began = _parse((row.details or {}).get("canary_started_at"))
            else:
                began = degraded_since or promoted_at.get(row.from_version or "")
            if in_window:
                rollbacks += 1
                failed_canaries += canary
                if began is not None:
                    restores.append((at - began).total_seconds())
            if canary:
                continue  # production itself was not touched: an open incident stays open
        elif row.action == "promote":
            if in_window:
                promotions += 1
                requested = _parse((row.details or {}).get("requested_at"))
                if requested is not None and requested <= at:
                    lead_times.append((at - requested).total_seconds())
                if degraded_since is not None:
                    restores.append((at - degraded_since).total_seconds())
            if row.to_version:
                promoted_at[row.to_version] = at
        degraded_since = None
        open_incidents = 0

    return {
        "model_name": model,
        "window_days": window_days,
        "window_start": start.isoformat(),
        "window_end": now.isoformat(),
        "deployments": promotions,
        "deployment_frequency_per_day": promotions / window_days,
        "lead_time_seconds": _median(lead_times),
        "lead_time_seconds_mean": float(statistics.fmean(lead_times)) if lead_times else None,
        "lead_time_samples": len(lead_times),
        "rollbacks": rollbacks,
        "change_failure_ratio": (rollbacks / changes) if (changes := promotions + failed_canaries) else None,
        "restores": len(restores),
        "time_to_restore_seconds": _median(restores),
        "degraded": degraded_since is not None,
        "degraded_since": degraded_since.isoformat() if degraded_since else None,
        "open_incidents": open_incidents,
    }
