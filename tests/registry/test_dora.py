"""DORA figures from a scripted history written straight into the audit log (backdated rows)."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta

import httpx
import psycopg2
import pytest

from tests.registry.helpers import OwnRegistry


def _insert(db_url: str, model: str, rows: list[tuple]) -> None:
    conn = psycopg2.connect(db_url)
    try:
        with conn, conn.cursor() as cur:
            for at, action, from_v, to_v, requested in rows:
                details = {"via": "script", "requested_at": requested.isoformat()} if requested else None
                cur.execute(
                    "INSERT INTO audit_log (created_at, actor, action, model_name, from_version, to_version, details)"
                    " VALUES (%s, 'admin', %s, %s, %s, %s, %s)",
                    (at, action, model, from_v, to_v, json.dumps(details) if details else None))
    finally:
        conn.close()


def test_dora_from_scripted_history(own_registry: OwnRegistry, model_name: str) -> None:
    now = datetime.now(UTC)
    day, hour = timedelta(days=1), timedelta(hours=1)
    _insert(own_registry.db_url, model_name, [
        (now - 40 * day, "promote", None, "1", now - 40 * day - hour),          # outside the window
        (now - 20 * day, "promote", "1", "2", now - 20 * day - 2 * hour),       # lead 2 h
        (now - 10 * day, "promote", "2", "3", now - 10 * day - 4 * hour),       # lead 4 h
        (now - 9 * day, "rollback", "3", "2", None),                            # v3 was bad for 1 day
        (now - 5 * day, "incident", "2", None, None),                           # degraded ...
        (now - 5 * day + hour, "promote", "2", "4", now - 5 * day - 5 * hour),  # ... restored 1 h later, lead 6 h
    ])
    with httpx.Client(base_url=own_registry.url, timeout=30) as client:
        figures = client.get(f"/models/{model_name}/dora", params={"window_days": 30}).json()
        assert figures["deployments"] == 3
        assert figures["deployment_frequency_per_day"] == pytest.approx(0.1)
        assert figures["lead_time_seconds"] == pytest.approx(4 * 3600)
        assert figures["lead_time_seconds_mean"] == pytest.approx(4 * 3600)
        assert figures["rollbacks"] == 1
        assert figures["change_failure_ratio"] == pytest.approx(1 / 3)
        assert figures["restores"] == 2
        assert figures["time_to_restore_seconds"] == pytest.approx((86400 + 3600) / 2)
        assert figures["degraded"] is False

        wide = client.get(f"/models/{model_name}/dora", params={"window_days": 60}).json()
        assert wide["deployments"] == 4 and wide["lead_time_seconds"] == pytest.approx(3 * 3600)

        assert client.get(f"/models/{model_name}/dora", params={"window_days": 0}).status_code == 422

        # The gauges are computed on scrape and cached for a few seconds.
        deadline = time.monotonic() + 20
        while model_name not in (metrics := client.get("/metrics").text) and time.monotonic() < deadline:
            time.sleep(0.5)

        def gauge(name: str) -> float:
            match = re.search(rf'^{name}{{model_name="{model_name}"}} (\S+)$', metrics, re.M)
            assert match, f"{name} missing"
            return float(match.group(1))

        assert gauge("registry_dora_deployment_frequency_per_day") == pytest.approx(0.1)
        assert gauge("registry_dora_lead_time_seconds") == pytest.approx(4 * 3600)
        assert gauge("registry_dora_change_failure_ratio") == pytest.approx(1 / 3)
        assert gauge("registry_dora_time_to_restore_seconds") == pytest.approx(45000)
        assert gauge("registry_production_version") == 4
        assert gauge("registry_pending_decisions") == 0


def test_audit_log_is_append_only(own_registry: OwnRegistry, model_name: str) -> None:
    _insert(own_registry.db_url, model_name, [(datetime.now(UTC), "promote", None, "1", None)])
    conn = psycopg2.connect(own_registry.db_url)
    try:
        for statement in ("UPDATE audit_log SET reason = 'x' WHERE model_name = %s",
                          "DELETE FROM audit_log WHERE model_name = %s"):
            with pytest.raises(psycopg2.Error, match="append-only"), conn, conn.cursor() as cur:
                cur.execute(statement, (model_name,))
    finally:
        conn.close()
