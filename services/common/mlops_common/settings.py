"""Settings every service reads from the environment (twelve-factor).

Each service subclasses :class:`CommonSettings` with its own fields; every variable is listed, with its
default, in `.env.example`. Placeholder secrets are refused unless ``ENVIRONMENT=local``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

PLACEHOLDER_SECRET = "changethis"
REPO_ROOT = Path(__file__).resolve().parents[3]


class FileSecretsSource(PydanticBaseSettingsSource):
    """Docker's ``_FILE`` convention: ``X_FILE=/run/secrets/x`` gives setting ``X`` the file's content.

    A non-empty ``X`` in the environment wins. pydantic-settings' own ``secrets_dir`` wants one folder with a
    file per field name; compose and Kubernetes hand each secret as its own path, so this small source reads
    ``X_FILE`` for every field instead."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name in self.settings_cls.model_fields:
            env = name.upper()
            path = os.environ.get(f"{env}_FILE")
            if not path or os.environ.get(env):
                continue
            try:
                values[name] = Path(path).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(f"{env}_FILE={path}: cannot read the secret file ({exc.strerror})") from exc
        return values


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    environment: Literal["local", "test", "production"] = "local"
    log_level: str = "INFO"
    # JSON lines for log collectors; "text" for a terminal.
    log_format: Literal["json", "text"] = "json"

    mlflow_tracking_uri: str = "http://127.0.0.1:5000"
    # This service's own MLflow user (MLflow's basic-auth app); handed to MLflow's client at start-up.
    mlflow_tracking_username: str | None = None
    mlflow_tracking_password: str | None = None
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Redis pub/sub channel on which registry-proxy announces every alias change.
    model_events_channel: str = "mlops:model-events"
    registry_url: str = "http://127.0.0.1:8001"
    # Folder of model specs (<name>.yaml).
    models_dir: Path = REPO_ROOT / "models"
    # Reads (GET routes, predictions) without a token: unset means open only when ENVIRONMENT is local or test.
    auth_open_reads: bool | None = None
    # How long a service trusts registry-proxy's answer about a token (a revoked token works at most this long).
    auth_cache_seconds: float = 10.0

    @property
    def open_reads(self) -> bool:
        return self.environment in ("local", "test") if self.auth_open_reads is None else self.auth_open_reads

    def apply_mlflow_credentials(self) -> None:
        """MLflow's client reads its credentials from the environment: set them once, at start-up."""
        if self.mlflow_tracking_username:
            os.environ["MLFLOW_TRACKING_USERNAME"] = self.mlflow_tracking_username
        if self.mlflow_tracking_password:
            os.environ["MLFLOW_TRACKING_PASSWORD"] = self.mlflow_tracking_password

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, FileSecretsSource(settings_cls), env_settings, dotenv_settings, file_secret_settings

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
