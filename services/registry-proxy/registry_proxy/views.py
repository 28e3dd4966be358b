"""The registry's read side: JSON views of MLflow's registered models and versions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mlflow.entities.model_registry import ModelVersion, RegisteredModel

from mlops_common.names import PRODUCTION_ALIAS
from registry_proxy.jsonsafe import finite
from registry_proxy.mlflow_registry import Registry


def _time(ms: int | None) -> str | None:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat() if ms else None


def model_summary(model: RegisteredModel) -> dict[str, Any]:
    aliases = {alias: str(v) for alias, v in (model.aliases or {}).items()}
    latest = max((int(v.version) for v in model.latest_versions or []), default=None)
    return {
        "name": model.name,
        "description": model.description or "",
        "aliases": aliases,
        "production_version": aliases.get(PRODUCTION_ALIAS),
        "latest_version": str(latest) if latest is not None else None,
        "created_at": _time(model.creation_timestamp),
        "updated_at": _time(model.last_updated_timestamp),
    }


def version_view(mv: ModelVersion, registry: Registry, aliases: dict[str, str] | None = None,
                 with_metrics: bool = True) -> dict[str, Any]:
    """``aliases`` (alias -> version, from the registered model) wins: version searches omit aliases."""
    metrics: dict[str, float] = {}
    experiment_id = None
    if with_metrics and mv.run_id:
        metrics, experiment_id = registry.run_info(mv.run_id)
    return {
        "version": str(mv.version),
        "aliases": sorted(a for a, v in aliases.items() if v == str(mv.version)) if aliases is not None
        else sorted(mv.aliases or []),
        "status": mv.status,
        "run_id": mv.run_id,
        "experiment_id": experiment_id,
        "source": mv.source,
        "created_at": _time(mv.creation_timestamp),
        "description": mv.description or "",
        "tags": dict(mv.tags or {}),
        "metrics": finite(metrics),
    }


def list_models(registry: Registry) -> list[dict[str, Any]]:
    return [model_summary(m) for m in registry.list_models()]


def model_detail(registry: Registry, name: str, limit: int) -> dict[str, Any]:
    """A model with its newest ``limit`` versions."""
    summary = model_summary(registry.get_model(name))
    versions = registry.versions(name)[:limit]
    return {**summary, "versions": [version_view(v, registry, summary["aliases"]) for v in versions]}


def version_detail(registry: Registry, name: str, version: str) -> dict[str, Any]:
    return version_view(registry.get_version(name, version), registry, registry.aliases(name))
