"""Instant queries to Prometheus (``PROMETHEUS_URL``), where canary analyses and shadow evidence read the
predictors' series. Prometheus not answering, or refusing a query, is :class:`PrometheusUnavailable`: the
callers pause or answer 503, never pass blindly."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import httpx


class PrometheusUnavailable(Exception):
    pass


def label(value: str) -> str:
    """A value for a PromQL label matcher's double-quoted string."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(raw: Any) -> float | None:
    value = float(raw)
    return None if math.isnan(value) or math.isinf(value) else value


class Prometheus:
    def __init__(self, url: str, timeout: float) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def query(self, query: str, at: datetime | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"query": query}
        if at is not None:
            params["time"] = at.timestamp()
        try:
            r = httpx.get(f"{self.url}/api/v1/query", params=params, timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise PrometheusUnavailable(f"Prometheus at {self.url} did not answer: {type(exc).__name__}") from exc
        if r.status_code != 200:
            raise PrometheusUnavailable(f"Prometheus at {self.url} answered {r.status_code}: {r.text[:200]}")
        try:
            body = r.json()
        except ValueError as exc:
            raise PrometheusUnavailable(f"Prometheus at {self.url} answered something that is not JSON") from exc
        if body.get("status") != "success":
            raise PrometheusUnavailable(f"Prometheus query failed: {body.get('error', body)}")
        return list(body.get("data", {}).get("result") or [])

    def value(self, query: str, at: datetime | None = None) -> float | None:
        """The first sample of an instant vector; None without data (or NaN)."""
        result = self.query(query, at)
        return _number(result[0]["value"][1]) if result else None

    def by(self, query: str, key: str, at: datetime | None = None) -> dict[str, float]:
        """Each sample of an instant vector keyed by one of its labels (NaN samples left out)."""
        out: dict[str, float] = {}
        for sample in self.query(query, at):
            value = _number(sample["value"][1])
            if value is not None:
                out[str(sample.get("metric", {}).get(key, ""))] = value
        return out
