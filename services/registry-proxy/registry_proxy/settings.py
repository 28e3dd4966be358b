"""registry-proxy settings, read once from the environment."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import AliasChoices, Field

from mlops_common.settings import PLACEHOLDER_SECRET, CommonSettings


class RegistrySettings(CommonSettings):
    registry_database_url: str = "postgresql://postgres@127.0.0.1:5432/registry"
    # Tokens of the principals the stack creates for itself on start (stored as hashes; see identity.py):
    # the first admin, the trainer service (asks the gate) and the alerting service (alert webhooks).
    registry_admin_token: str = PLACEHOLDER_SECRET
    registry_service_token: str = PLACEHOLDER_SECRET
    trainer_api_token: str = PLACEHOLDER_SECRET

    # Where links in notifications and the UI point (the externally reachable base URL of this service).
    public_url: str = Field("http://127.0.0.1:8001", validation_alias=AliasChoices("PUBLIC_URL", "REGISTRY_PUBLIC_URL"))
    # Where links to MLflow runs point; defaults to MLFLOW_TRACKING_URI.
    mlflow_public_url: str | None = None

    notify_webhook_url: str | None = None
    notify_format: Literal["json", "slack"] = "json"
    notify_max_attempts: int = Field(5, ge=1, le=20)
    notify_backoff_seconds: float = Field(1.0, ge=0)
    notify_timeout_seconds: float = Field(5.0, gt=0)

    dora_window_days: float = Field(30.0, gt=0)
    # MLflow client behaviour: fail fast so a dead MLflow becomes a 503, not a hung request.
    registry_mlflow_timeout_seconds: int = Field(10, ge=1)
    registry_mlflow_max_retries: int = Field(1, ge=0)
    # How long a mutation waits for the per-model lock before answering 503.
    registry_lock_timeout_seconds: float = Field(30.0, gt=0)

    # Canary rollouts: where the analysis reads the predictors' metrics, and the bars every step must stay under
    # (a model's canary request may set its own, lower or higher).
    prometheus_url: str = "http://127.0.0.1:9090"
    prometheus_timeout_seconds: float = Field(5.0, gt=0)
    canary_max_error_ratio: float = Field(0.05, ge=0, le=1)
    canary_max_p99_seconds: float = Field(1.0, gt=0)
    # How far a canary's live accuracy may fall below production's (when both series exist).
    canary_max_quality_drop: float = Field(0.05, ge=0, le=1)
    # The analysis looks back max(interval, this) so that a short interval still spans a few scrapes.
    canary_min_window_seconds: float = Field(30.0, gt=0)
    # How often the background loop looks for a canary whose step is due; 0 turns the loop off.
    canary_tick_seconds: float = Field(2.0, ge=0)

    def _secrets(self) -> dict[str, str]:
        return {
            "registry_admin_token": self.registry_admin_token,
            "registry_service_token": self.registry_service_token,
            "trainer_api_token": self.trainer_api_token,
        }

    @property
    def mlflow_link_base(self) -> str:
        return (self.mlflow_public_url or self.mlflow_tracking_uri).rstrip("/")

    @property
    def ui_url(self) -> str:
        return f"{self.public_url.rstrip('/')}/ui"


@lru_cache
def get_settings() -> RegistrySettings:
    return RegistrySettings()
