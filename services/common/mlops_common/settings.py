"""Settings every service reads from the environment (twelve-factor).

Each service subclasses :class:`CommonSettings` with its own fields; every variable is listed, with its
default, in `.env.example`. Placeholder secrets are refused unless ``ENVIRONMENT=local``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRET = "changethis"
REPO_ROOT = Path(__file__).resolve().parents[3]


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    environment: Literal["local", "test", "production"] = "local"
    log_level: str = "INFO"

    mlflow_tracking_uri: str = "http://127.0.0.1:5000"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Redis pub/sub channel on which registry-proxy announces every alias change.
    model_events_channel: str = "mlops:model-events"
    registry_url: str = "http://127.0.0.1:8001"
    # Folder of model specs (<name>.yaml).
    models_dir: Path = REPO_ROOT / "models"

    def _secrets(self) -> dict[str, str]:
        """Secret fields of a subclass, by name; checked against the placeholder outside local runs."""
        return {}

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> CommonSettings:
        if self.environment == "production":
            weak = [name for name, value in self._secrets().items() if value in ("", PLACEHOLDER_SECRET)]
            if weak:
                raise ValueError(
                    f"set {', '.join(n.upper() for n in weak)} in the environment: "
                    f"the placeholder '{PLACEHOLDER_SECRET}' is refused when ENVIRONMENT=production"
                )
        return self
