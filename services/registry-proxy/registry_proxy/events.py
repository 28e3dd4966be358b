"""Publishes alias changes on Redis (after MLflow accepted them). A Redis outage only delays predictors,
which also poll, so a failed publish is logged and counted, never raised."""

from __future__ import annotations

import logging

import redis
from prometheus_client import Counter

from mlops_common.events import ModelEvent

log = logging.getLogger(__name__)

EVENTS_PUBLISHED = Counter("registry_events_published_total", "Alias events published on Redis", ["outcome"])


class EventPublisher:
    def __init__(self, redis_url: str, channel: str) -> None:
        self.channel = channel
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)

    def publish(self, event: ModelEvent) -> None:
        try:
            self.redis.publish(self.channel, event.to_json())
            EVENTS_PUBLISHED.labels(outcome="success").inc()
        except redis.RedisError as exc:
            EVENTS_PUBLISHED.labels(outcome="failure").inc()
            log.warning("could not publish %s on %s: %s", event.to_json(), self.channel, exc)

    def close(self) -> None:
        self.redis.close()
