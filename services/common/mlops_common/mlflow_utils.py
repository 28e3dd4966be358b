"""Small helpers around MLflow's registry, used by every service. Aliases, never stages."""

from __future__ import annotations

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException, RestException
from mlflow.tracking import MlflowClient

PRODUCTION = "production"
CHALLENGER = "challenger"
PREVIOUS = "previous"
ALIASES = (PRODUCTION, CHALLENGER, PREVIOUS)


def client(tracking_uri: str) -> MlflowClient:
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def is_not_found(exc: Exception) -> bool:
    return isinstance(exc, MlflowException) and exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")


def version_by_alias(mlflow_client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version that holds ``alias``, or None when the alias or the model does not exist."""
    try:
        return mlflow_client.get_model_version_by_alias(name, alias)
    except (MlflowException, RestException) as exc:
        if is_not_found(exc) or ("alias" in str(exc).lower() and "not found" in str(exc).lower()):
            return None
        # MLflow's auth app answers 403, not 404, for a model that does not exist yet (it has no permission
        # to look up); a search sees only models that exist and that this user may read.
        if getattr(exc, "error_code", None) == "PERMISSION_DENIED" and not model_exists(mlflow_client, name):
            return None
        raise


def model_exists(mlflow_client: MlflowClient, name: str) -> bool:
    escaped = name.replace("'", "\\'")
    return bool(mlflow_client.search_registered_models(filter_string=f"name = '{escaped}'", max_results=1))


def model_uri(name: str, version: str | int) -> str:
    return f"models:/{name}/{version}"
