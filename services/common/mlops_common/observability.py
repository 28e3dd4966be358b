"""One logging set-up and one metrics set-up for every FastAPI service."""

from __future__ import annotations

import logging
import sys

from fastapi import FastAPI
from prometheus_fastapi_instrumentator import Instrumentator


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        stream=sys.stdout,
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        force=True,
    )


def instrument(app: FastAPI, namespace: str) -> Instrumentator:
    """Expose ``/metrics`` with HTTP metrics under the service's prefix (``<namespace>_http_...``)."""
    instrumentator = Instrumentator(
        should_group_status_codes=False,
        excluded_handlers=["/metrics", "/health"],
    )
    instrumentator.instrument(app, metric_namespace=namespace).expose(app, include_in_schema=False)
    return instrumentator
