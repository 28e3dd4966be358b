"""Writing and paging the append-only audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from registry_proxy.db import AuditEntry
from registry_proxy.jsonsafe import finite


def record(session: Session, *, actor: str, action: str, model: str, from_version: str | None = None,
           to_version: str | None = None, reason: str | None = None, metrics: dict[str, Any] | None = None,
           details: dict[str, Any] | None = None, at: datetime | None = None,
           on_behalf_of: str | None = None) -> AuditEntry:
    entry = AuditEntry(actor=actor, on_behalf_of=on_behalf_of, action=action, model_name=model,
                       from_version=from_version,
                       to_version=to_version, reason=reason or None, metrics=finite(metrics) or None,
                       details=finite(details) or None)
    if at is not None:
        entry.created_at = at
    session.add(entry)
    session.flush()
    return entry


def page(session: Session, *, model: str | None, action: str | None, limit: int, offset: int,
         before_id: int | None = None) -> tuple[list[AuditEntry], int]:
    """Newest first. ``before_id`` is a cursor (the last id of the previous page) and wins over ``offset``."""
    query = select(AuditEntry)
    count = select(func.count()).select_from(AuditEntry)
    if model:
        query, count = query.where(AuditEntry.model_name == model), count.where(AuditEntry.model_name == model)
    if action:
        query, count = query.where(AuditEntry.action == action), count.where(AuditEntry.action == action)
    if before_id is not None:
        query = query.where(AuditEntry.id < before_id)
        offset = 0
    rows = session.scalars(query.order_by(AuditEntry.id.desc()).limit(limit).offset(offset)).all()
    return list(rows), session.scalar(count) or 0


def to_dict(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "time": entry.created_at.isoformat() if entry.created_at else None,
        "actor": entry.actor,
        "on_behalf_of": entry.on_behalf_of,
        "action": entry.action,
        "model_name": entry.model_name,
        "from_version": entry.from_version,
        "to_version": entry.to_version,
        "reason": entry.reason,
        "metrics": entry.metrics or {},
        "details": entry.details or {},
    }


def listing(sessions: sessionmaker, *, model: str | None, action: str | None, limit: int, offset: int,
            before_id: int | None) -> dict[str, Any]:
    """One page of the log with what it takes to ask for the next one (``next_offset`` or ``next_before_id``)."""
    with sessions() as session:
        rows, total = page(session, model=model, action=action, limit=limit, offset=offset, before_id=before_id)
        items = [to_dict(r) for r in rows]
    next_offset = offset + len(items) if before_id is None and offset + len(items) < total else None
    return {"items": items, "total": total, "limit": limit, "offset": offset, "next_offset": next_offset,
            "next_before_id": items[-1]["id"] if len(items) == limit else None}
