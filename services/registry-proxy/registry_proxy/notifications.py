"""Webhook notifications, sent in the background with retries and exponential backoff.

Every notification is first a row in ``notifications``, written in the same transaction as the change it
announces (an outbox), then delivered by a background thread after the commit; rows a crashed process
left pending are re-sent at start-up. A final failure is also written to the audit log. Nothing here can
block or fail a promotion.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from registry_proxy import audit
from registry_proxy.db import Notification
from registry_proxy.jsonsafe import finite
from registry_proxy.metrics import NOTIFICATIONS
from registry_proxy.settings import RegistrySettings

log = logging.getLogger(__name__)

TITLES = {
    "promotion": "promoted to production",
    "rollback": "rolled back",
    "pending_decision": "needs a decision",
    "incident": "production degraded",
}


class DeliveryFailed(Exception):
    """One failed attempt to deliver a notification; the message is what the row records."""


def slack_body(payload: dict[str, Any]) -> dict[str, Any]:
    model, version = payload.get("model"), payload.get("version")
    title = f"*{model}* v{version} {TITLES.get(payload['event'], payload['event'])}"
    lines = [title]
    if payload.get("from_version"):
        lines.append(f"from v{payload['from_version']}")
    if payload.get("reason"):
        lines.append(f"reason: {payload['reason']}")
    metrics = payload.get("metrics") or {}
    if metrics:
        lines.append(", ".join(f"{k}={v}" for k, v in metrics.items() if v is not None))
    lines.append(f"<{payload['links']['ui']}|Open the registry>")
    text = "\n".join(lines)
    return {"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]}


def notification_view(row: Notification) -> dict[str, Any]:
    return {"id": row.id, "event": row.event, "model_name": row.model_name, "status": row.status,
            "attempts": row.attempts, "last_error": row.last_error, "created_at": row.created_at.isoformat(),
            "updated_at": row.updated_at.isoformat(), "payload": row.payload}


class Notifier:
    def __init__(self, settings: RegistrySettings, sessions: sessionmaker) -> None:
        self.settings = settings
        self.sessions = sessions
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="notify")

    def payload(self, event: str, model: str, **fields: Any) -> dict[str, Any]:
        ui = self.settings.ui_url
        decision_id = fields.get("decision_id")
        return {
            "event": event,
            "model": model,
            "time": datetime.now(UTC).isoformat(),
            **fields,
            "links": {
                "ui": f"{ui}#decision-{decision_id}" if decision_id else f"{ui}#model-{model}",
                "model": f"{self.settings.public_url.rstrip('/')}/models/{model}",
            },
        }

    def enqueue(self, session: Session, event: str, model: str, **fields: Any) -> int | None:
        """Writes the notification in the caller's transaction (an outbox row); returns its id, or None
        when no webhook is configured. Send it with :meth:`submit` once the transaction committed."""
        if not self.settings.notify_webhook_url:
            return None
        row = Notification(event=event, model_name=model, status="pending", attempts=0,
                           payload=finite(self.payload(event, model, **fields)))
        session.add(row)
        session.flush()
        return row.id

    def recent(self, model: str | None = None, status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Notifications, newest first, with how their delivery went."""
        query = select(Notification).order_by(Notification.id.desc()).limit(limit)
        if model:
            query = query.where(Notification.model_name == model)
        if status:
            query = query.where(Notification.status == status)
        with self.sessions() as session:
            return [notification_view(n) for n in session.scalars(query)]

    def submit(self, row_id: int | None) -> None:
        if row_id is not None:
            self.executor.submit(self._deliver, row_id)

    def resume_stale(self, older_than_seconds: float = 300) -> int:
        """Re-sends deliveries a previous process left pending (claimed atomically, so one replica does it)."""
        if not self.settings.notify_webhook_url:
            return 0
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_seconds)
        with self.sessions() as session, session.begin():
            ids = session.scalars(
                update(Notification)
                .where(Notification.status == "pending", Notification.updated_at < cutoff)
                .values(updated_at=datetime.now(UTC))
                .returning(Notification.id)).all()
        for row_id in ids:
            self.submit(row_id)
        return len(ids)

    def _deliver(self, row_id: int) -> None:
        try:
            self._deliver_with_retries(row_id)
        except Exception:  # a background thread must not die silently
            log.exception("notification %s could not be processed", row_id)

    def _deliver_with_retries(self, row_id: int) -> None:
        settings = self.settings
        url = settings.notify_webhook_url
        assert url
        with self.sessions() as session:
            row = session.get(Notification, row_id)
            if row is None or row.status != "pending":
                return
            payload, done = dict(row.payload), row.attempts
        body = slack_body(payload) if settings.notify_format == "slack" else payload
        attempt = done  # attempts made so far, this process's included

        def send() -> None:
            nonlocal attempt
            attempt += 1
            try:
                response = httpx.post(url, json=body, timeout=settings.notify_timeout_seconds)
            except httpx.HTTPError as exc:
                raise DeliveryFailed(f"{type(exc).__name__}: {exc}"[:300]) from exc
            if response.status_code >= 300:
                raise DeliveryFailed(f"HTTP {response.status_code}: {response.text[:200]}")

        def retried(state: RetryCallState) -> None:
            NOTIFICATIONS.labels(outcome="retried").inc()
            self._finish(row_id, "pending", attempt, str(state.outcome.exception()) if state.outcome else None)

        # Attempt n (counting those of earlier processes) waits NOTIFY_BACKOFF_SECONDS * 2^(n-1), plus jitter.
        backoff = settings.notify_backoff_seconds
        retrying = Retrying(stop=stop_after_attempt(max(settings.notify_max_attempts - done, 1)),
                            wait=wait_exponential_jitter(initial=backoff * 2**done, jitter=backoff),
                            retry=retry_if_exception_type(DeliveryFailed), before_sleep=retried, reraise=True)
        try:
            retrying(send)
        except DeliveryFailed as exc:
            error = str(exc)
        else:
            NOTIFICATIONS.labels(outcome="sent").inc()
            self._finish(row_id, "sent", attempt, None)
            return
        NOTIFICATIONS.labels(outcome="failed").inc()
        log.warning("notification %s for %s failed after %d attempts: %s", payload["event"], payload["model"],
                    attempt, error)
        self._finish(row_id, "failed", attempt, error)
        with self.sessions() as session, session.begin():
            audit.record(session, actor="system", action="notification_failed", model=payload["model"],
                         to_version=str(payload.get("version")) if payload.get("version") else None,
                         reason=error, details={"notification_id": row_id, "event": payload["event"],
                                                "attempts": attempt})

    def _finish(self, row_id: int, status: str, attempts: int, error: str | None) -> None:
        with self.sessions() as session, session.begin():
            row = session.get(Notification, row_id)
            if row is not None:
                row.status, row.attempts, row.last_error = status, attempts, error
                row.updated_at = datetime.now(UTC)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
