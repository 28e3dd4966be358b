"""Tests register model versions directly in MLflow as its admin (as an operator could). In the stack only
registry-proxy creates registered models, and MLflow gives their creator MANAGE; a model a test made needs
the same grant for registry-proxy's MLflow user, or registry-proxy could not move its aliases."""

from __future__ import annotations

import os

import httpx

REGISTRY_PROXY_USER = "registry-proxy"


def let_registry_proxy_manage(tracking_uri: str, name: str) -> None:
    """Grants registry-proxy's MLflow user MANAGE on registered model ``name`` (no-op without MLflow auth)."""
    username, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if not username or not password:
        return
    url = f"{tracking_uri.rstrip('/')}/api/3.0/mlflow/users/permissions/grant"
    r = httpx.post(url, auth=(username, password), timeout=30,
                   json={"username": REGISTRY_PROXY_USER, "resource_type": "registered_model", "resource_id": name,
                         "permission": "MANAGE"})
    if r.status_code != 200 and "RESOURCE_ALREADY_EXISTS" not in r.text:
        raise AssertionError(f"could not grant {REGISTRY_PROXY_USER} MANAGE on {name}: {r.status_code} {r.text}")
