"""Trainer settings, read once from the environment (see `.env.example`)."""

from __future__ import annotations

import os
import tempfile
from functools import lru_cache
from pathlib import Path

from pydantic import Field, model_validator

from mlops_common.settings import PLACEHOLDER_SECRET, REPO_ROOT, CommonSettings


class TrainerSettings(CommonSettings):
    # Celery broker; empty means REDIS_URL.
    celery_broker_url: str = ""
    celery_result_backend: str = ""
    celery_queue: str = "training"
    # Seconds before an unacknowledged job is redelivered to another worker: longer than the longest job.
    celery_visibility_timeout: int = Field(4 * 3600, ge=5)

    # Content-addressed dataset snapshots (<sha256>.<ext>); shared by the API and every worker.
    datasets_dir: Path = REPO_ROOT / ".dev" / "datasets"
    # Extra folders (besides the repo's data/ and DATASETS_DIR) from which a local data.uri may be read.
    data_roots: list[Path] = Field(default_factory=list)
    max_upload_bytes: int = Field(512 * 1024 * 1024, ge=1)
    # Snapshots up to this size are also logged as an artifact of the run (beside the dataset input).
    log_dataset_max_bytes: int = Field(50 * 1024 * 1024, ge=0)
    http_timeout_seconds: float = 60.0
    # Hosts, addresses or networks (JSON list) an http(s) data.uri may reach although they are internal
    # (loopback, private, link-local); every other internal address is refused (SSRF guard).
    data_allowed_hosts: list[str] = Field(default_factory=list)
    # The predictors' served log (Postgres; their SERVED_LOG_DATABASE_URL), read for production:<model> datasets.
    served_log_database_url: str = ""
    # Fewest rows a dataset may have after cleaning.
    min_rows: int = Field(20, ge=3)

    # The trainer service's API token at registry-proxy (role trainer: reads, and reports jobs to the gate).
    registry_service_token: str = PLACEHOLDER_SECRET

    # Job records (and idempotency keys) expire after this many seconds.
    job_ttl_seconds: int = Field(30 * 24 * 3600, ge=60)
    # An alert group retrains a model at most once per cool-down.
    alert_cooldown_seconds: int = Field(3600, ge=0)
    # Whatever the alert group, a model retrains from alerts at most once per ALERT_MODEL_COOLDOWN_SECONDS and at
    # most ALERT_MAX_RETRAINS_PER_DAY times in any 24 hours; beyond that an alert is acknowledged, not queued
    # (a retrain that cannot beat production ends in a pending decision, never in a loop of retrains).
    alert_model_cooldown_seconds: int = Field(1800, ge=0)
    alert_max_retrains_per_day: int = Field(6, ge=1)
    # How often trainer-beat looks at the specs' cron schedules.
    schedule_tick_seconds: float = Field(60.0, gt=0)
    # Candidates that train at once inside one job (threads); 0 = half the CPU cores, 1 = one by one.
    candidate_parallelism: int = Field(0, ge=0)

    def _secrets(self) -> dict[str, str]:
        return {"registry_service_token": self.registry_service_token}

    @model_validator(mode="after")
    def _broker_defaults(self) -> TrainerSettings:
        if not self.celery_broker_url:
            self.celery_broker_url = self.redis_url
        if not self.celery_result_backend:
            self.celery_result_backend = self.redis_url
        return self

    def prepare_process(self) -> None:
        """Sets this process up for MLflow, at start-up (the API's lifespan, each worker process): the service's
        MLflow user, and no telemetry (a self-hosted stack does not phone home; MLFLOW_DISABLE_TELEMETRY=false
        opts in)."""
        self.apply_mlflow_credentials()
        if "MLFLOW_DISABLE_TELEMETRY" not in os.environ:
            os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
            from mlflow.telemetry import set_telemetry_client

            # MLflow made its telemetry client when it was imported (before this default); this drops it.
            set_telemetry_client()

    @property
    def parallelism(self) -> int:
        return self.candidate_parallelism or max(1, (os.cpu_count() or 2) // 2)

    @property
    def allowed_data_roots(self) -> list[Path]:
        """Folders a local ``data.uri`` may point into (symlinks resolved, so ``..`` cannot escape)."""
        roots = [(REPO_ROOT / "data").resolve(), self.datasets_dir.resolve(), *(p.resolve() for p in self.data_roots)]
        if self.environment in ("local", "test"):  # scratch files of local runs and test suites
            roots.append(Path(tempfile.gettempdir()).resolve())
        return roots


@lru_cache
def get_settings() -> TrainerSettings:
    return TrainerSettings()
