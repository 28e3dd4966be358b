"""One logging set-up and one metrics set-up for every FastAPI service."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

from fastapi import FastAPI
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, Summary
from prometheus_fastapi_instrumentator import Instrumentator
from prometheus_fastapi_instrumentator.metrics import Info

# The buckets of the instrumentator's default metrics (``Instrumentator.instrument``'s defaults).
LATENCY_HIGHR_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 7.5, 10,
                         30, 60, float("inf"))
LATENCY_LOWR_BUCKETS = (0.1, 0.5, 1, float("inf"))


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        stream=sys.stdout,
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        force=True,
    )


@dataclass(frozen=True)
class HttpMetrics:
    """A service's HTTP metric families: the names, help texts, labels and buckets of the instrumentator's
    default set (``prometheus_fastapi_instrumentator.metrics.default``), created here so that code outside its
    middleware (the predictor's fast path) records into the same families through their public API."""

    requests: Counter  # method, status, handler
    request_size: Summary  # handler
    response_size: Summary  # handler
    latency_highr: Histogram  # no labels
    latency: Histogram  # method, handler

    @classmethod
    def create(cls, namespace: str, registry: CollectorRegistry) -> HttpMetrics:
        return cls(
            requests=Counter("http_requests_total", "Total number of requests by method, status and handler.",
                             ("method", "status", "handler"), namespace=namespace, registry=registry),
            request_size=Summary("http_request_size_bytes",
                                 "Content length of incoming requests by handler. Only value of header is "
                                 "respected. Otherwise ignored. No percentile calculated. ",
                                 ("handler",), namespace=namespace, registry=registry),
            response_size=Summary("http_response_size_bytes",
                                  "Content length of outgoing responses by handler. Only value of header is "
                                  "respected. Otherwise ignored. No percentile calculated. ",
                                  ("handler",), namespace=namespace, registry=registry),
            latency_highr=Histogram("http_request_duration_highr_seconds",
                                    "Latency with many buckets but no API specific labels. Made for more accurate "
                                    "percentile calculations. ",
                                    buckets=LATENCY_HIGHR_BUCKETS, namespace=namespace, registry=registry),
            latency=Histogram("http_request_duration_seconds",
                              "Latency with only few buckets by handler. Made to be only used if aggregation by "
                              "handler is important. ",
                              ("method", "handler"), buckets=LATENCY_LOWR_BUCKETS, namespace=namespace,
                              registry=registry),
        )

    def observe(self, info: Info) -> None:
        """One request seen by the instrumentator's middleware (what its default instrumentation records)."""
        handler, method, status = info.modified_handler, info.method, info.modified_status
        self.requests.labels(method, status, handler).inc()
        self.request_size.labels(handler).observe(int(info.request.headers.get("Content-Length", 0)))
        response = info.response
        size = int(response.headers.get("Content-Length", 0)) if response and hasattr(response, "headers") else 0
        self.response_size.labels(handler).observe(size)
        self.latency_highr.observe(info.modified_duration)
        self.latency.labels(method, handler).observe(info.modified_duration)


_http_metrics: dict[tuple[int, str], HttpMetrics] = {}


def http_metrics(namespace: str, registry: CollectorRegistry = REGISTRY) -> HttpMetrics:
    """The HTTP metric families of ``namespace`` (``<namespace>_http_...``), created on first use."""
    key = (id(registry), namespace)
    found = _http_metrics.get(key)
    if found is None:
        found = _http_metrics[key] = HttpMetrics.create(namespace, registry)
    return found


def instrument(app: FastAPI, namespace: str) -> Instrumentator:
    """Expose ``/metrics`` with HTTP metrics under the service's prefix (``<namespace>_http_...``)."""
    instrumentator = Instrumentator(
        should_group_status_codes=False,
        excluded_handlers=["/metrics", "/health"],
    )
    instrumentator.add(http_metrics(namespace).observe)
    instrumentator.instrument(app, metric_namespace=namespace).expose(app, include_in_schema=False)
    return instrumentator
