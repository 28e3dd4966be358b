"""API tokens of the test stack's principals, and a way to make more.

registry-proxy creates three principals on start from the tokens in the services' environment (see
``tests/conftest.py``): ``admin`` (role admin: may do everything), ``trainer`` (the trainer service: reads
and the gate) and ``alerting`` (role scientist: the alert webhooks). Tests that act as a person of a given
role create that principal through the API with :func:`principal_token`.
"""

from __future__ import annotations

import uuid

import httpx

ADMIN_TOKEN = "test-admin-token"
SERVICE_TOKEN = "test-service-token"
TRAINER_TOKEN = "test-trainer-token"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


ADMIN = bearer(ADMIN_TOKEN)


def principal_token(registry_url: str, role: str, name: str | None = None, **token_fields: object) -> tuple[str, str]:
    """Creates a principal with ``role`` (as the admin) and a token for it; returns (name, token)."""
    name = name or f"{role}-{uuid.uuid4().hex[:8]}"
    r = httpx.post(f"{registry_url}/principals", json={"name": name, "role": role}, headers=ADMIN, timeout=30)
    assert r.status_code == 201, r.text
    r = httpx.post(f"{registry_url}/principals/{name}/tokens", json=token_fields, headers=ADMIN, timeout=30)
    assert r.status_code == 201, r.text
    return name, r.json()["token"]
