"""Everything the trainer's code works with, built in one place: trainer-api builds it in its lifespan (kept on
``app.state.ctx``), each Celery worker process builds its own on first use (:func:`worker_context`).

Building a context connects to nothing: Redis and MLflow are reached when first used, so a process starts
while they are down and answers 503 (or retries) until they are back.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import mlflow
import redis
from mlflow.tracking import MlflowClient

from mlops_common.auth import Authenticator, RemoteAuthenticator
from trainer.datasets import DatasetStore
from trainer.jobs import JobStore, connect
from trainer.lineage import mlflow_restorer
from trainer.settings import TrainerSettings, get_settings

REDIS_SCHEMES = ("redis://", "rediss://")


@dataclass
class TrainerContext:
    settings: TrainerSettings
    store: JobStore
    datasets: DatasetStore
    # The Celery broker when it is Redis (queue depth, readiness); otherwise the job store's connection.
    broker: redis.Redis
    mlflow: MlflowClient
    # Who holds an API token (registry-proxy, cached); only the API checks tokens.
    authenticator: Authenticator

    @property
    def broker_is_separate(self) -> bool:
        """True when the broker is a Redis of its own, to be checked besides the job store."""
        url = self.settings.celery_broker_url
        return url != self.settings.redis_url and url.startswith(REDIS_SCHEMES)

    async def aclose(self) -> None:
        if isinstance(self.authenticator, RemoteAuthenticator):
            await self.authenticator.aclose()
        self.store.close()
        self.broker.close()


def build_context(settings: TrainerSettings) -> TrainerContext:
    conn = connect(settings.redis_url)
    broker_url = settings.celery_broker_url
    broker = (redis.Redis.from_url(broker_url, socket_connect_timeout=2, socket_timeout=5)
              if broker_url.startswith(REDIS_SCHEMES) else conn)
    datasets = DatasetStore(settings.datasets_dir, settings.allowed_data_roots, settings.max_upload_bytes,
                            settings.http_timeout_seconds, allowed_hosts=settings.data_allowed_hosts,
                            restore=mlflow_restorer(settings.mlflow_tracking_uri),
                            served_log_url=settings.served_log_database_url)
    return TrainerContext(
        settings=settings,
        store=JobStore(conn, settings.job_ttl_seconds),
        datasets=datasets,
        broker=broker,
        mlflow=MlflowClient(tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri),
        authenticator=RemoteAuthenticator(settings.registry_url, settings.auth_cache_seconds),
    )


@cache
def worker_context() -> TrainerContext:
    """The context of this worker process, built on first use: after the pool forked, so no connection is
    shared between processes. The tasks also use MLflow's fluent API (``start_run``, ``load_model``), which
    reads the process-wide tracking and registry URIs: they are set here too."""
    settings = get_settings()
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    return build_context(settings)
