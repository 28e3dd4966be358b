"""registry_ metrics. Counters are incremented where things happen; the gauges are read from the registry
database on each scrape (cached briefly), so every replica reports the same figures."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from registry_proxy import dora
from registry_proxy.db import AuditEntry, Decision

log = logging.getLogger(__name__)

PROMOTIONS = Counter("registry_promotions_total", "Versions moved to production", ["model_name"])
ROLLBACKS = Counter("registry_rollbacks_total", "Rollbacks of production to the previous version", ["model_name"])
NOTIFICATIONS = Counter("registry_notifications_total", "Webhook notification attempts by outcome", ["outcome"])
GATE_CALLS = Counter("registry_gate_calls_total", "Gate calls from the trainer", ["model_name", "outcome"])


def production_versions(session: Session) -> dict[str, str | None]:
    """The production version per model, as the audit log last moved it."""
    latest = (select(AuditEntry.model_name, func.max(AuditEntry.id).label("id"))
              .where(AuditEntry.action.in_(("promote", "rollback"))).group_by(AuditEntry.model_name).subquery())
    rows = session.execute(select(AuditEntry.model_name, AuditEntry.to_version)
                           .join(latest, AuditEntry.id == latest.c.id)).all()
    return {name: version for name, version in rows}


class StateCollector(Collector):
    def __init__(self, cache_seconds: float = 5.0) -> None:
        self.sessions: sessionmaker | None = None
        self.window_days = 30.0
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._cached: tuple[float, list[GaugeMetricFamily]] | None = None

    def configure(self, sessions: sessionmaker, window_days: float) -> None:
        self.sessions, self.window_days = sessions, window_days
        self._cached = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self.sessions is None:
            return iter(())
        with self._lock:
            if self._cached is None or time.monotonic() - self._cached[0] > self.cache_seconds:
                try:
                    self._cached = (time.monotonic(), self._families())
                except Exception as exc:  # noqa: BLE001 - a scrape must not fail because the database is down
                    log.warning("registry gauges unavailable: %s", exc)
                    return iter(self._cached[1] if self._cached else ())
            return iter(self._cached[1])

    def _families(self) -> list[GaugeMetricFamily]:
        assert self.sessions is not None
        families: dict[str, GaugeMetricFamily] = {
            "pending": GaugeMetricFamily("registry_pending_decisions", "Pending human decisions",
                                         labels=["model_name"]),
            "production": GaugeMetricFamily("registry_production_version",
                                            "Version number in production (0 when none)", labels=["model_name"]),
            "freq": GaugeMetricFamily("registry_dora_deployment_frequency_per_day",
                                      "Promotions per day over the DORA window", labels=["model_name"]),
            "lead": GaugeMetricFamily("registry_dora_lead_time_seconds",
                                      "Median retrain request to production, over the DORA window",
                                      labels=["model_name"]),
            "cfr": GaugeMetricFamily("registry_dora_change_failure_ratio",
                                     "Rollbacks / promotions over the DORA window", labels=["model_name"]),
            "ttr": GaugeMetricFamily("registry_dora_time_to_restore_seconds",
                                     "Median degraded production to restore, over the DORA window",
                                     labels=["model_name"]),
        }
        with self.sessions() as session:
            models = set(session.scalars(select(AuditEntry.model_name).distinct()).all())
            pending = dict(session.execute(
                select(Decision.model_name, func.count()).where(Decision.status == "pending")
                .group_by(Decision.model_name)).all())
            models |= set(pending)
            production = production_versions(session)
            for name in sorted(models):
                figures: dict[str, Any] = dora.compute(session, name, self.window_days)
                families["pending"].add_metric([name], pending.get(name, 0))
                version = production.get(name)
                families["production"].add_metric([name], float(version) if version and version.isdigit() else 0)
                families["freq"].add_metric([name], figures["deployment_frequency_per_day"])
                families["lead"].add_metric([name], figures["lead_time_seconds"] or 0.0)
                families["cfr"].add_metric([name], figures["change_failure_ratio"] or 0.0)
                families["ttr"].add_metric([name], figures["time_to_restore_seconds"] or 0.0)
        return list(families.values())


STATE = StateCollector()
REGISTRY.register(STATE)
