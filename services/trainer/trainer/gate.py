"""The promotion gate (DESIGN.md) and the call that asks registry-proxy to act on its outcome."""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

import httpx

from mlops_common.spec import MetricSpec

log = logging.getLogger(__name__)
Outcome = Literal["promoted", "kept", "pending_approval"]


class RegistryError(RuntimeError):
    def __init__(self, message: str, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


def decide(metric: MetricSpec, challenger: float, production: float | None,
           production_version: str | None) -> tuple[Outcome, str]:
    name = metric.name
    bar = "no threshold" if metric.threshold is None else f"threshold {metric.threshold}"
    if production_version is None:
        if metric.meets(challenger):
            return "promoted", f"no production version; challenger {name}={challenger:.4f} meets {bar}"
        return "pending_approval", f"no production version and challenger {name}={challenger:.4f} misses {bar}"
    if production is None:
        return "pending_approval", (f"production version {production_version} could not be evaluated on the new "
                                    f"test split; challenger {name}={challenger:.4f} needs a human decision")
    if metric.better(challenger, production) and metric.meets(challenger):
        return "promoted", (f"challenger {name}={challenger:.4f} beats production v{production_version} "
                            f"({production:.4f}) by more than {metric.margin} and meets {bar}")
    if metric.meets(production):
        return "kept", (f"production v{production_version} {name}={production:.4f} still meets {bar}; challenger "
                        f"{challenger:.4f} does not beat it by more than {metric.margin}"
                        + ("" if metric.meets(challenger) else f" and misses {bar}"))
    return "pending_approval", (f"neither meets {bar}: challenger {name}={challenger:.4f}, production "
                                f"v{production_version} {production:.4f}")


def call_registry(registry_url: str, token: str, model_name: str, payload: dict[str, Any],
                  timeout: float = 30.0, attempts: int = 3) -> dict[str, Any]:
    """``POST /models/{name}/gate``; retried on connection errors and 5xx (the call is idempotent per job)."""
    url = f"{registry_url.rstrip('/')}/models/{model_name}/gate"
    last = ""
    for attempt in range(attempts):
        try:
            resp = httpx.post(url, json=payload, headers={"Authorization": f"Bearer {token}"}, timeout=timeout)
        except httpx.HTTPError as exc:
            last = f"registry-proxy unreachable at {registry_url}: {exc}"
        else:
            if resp.status_code < 300:
                return resp.json()
            detail = resp.text[:500]
            if resp.status_code < 500:
                raise RegistryError(f"registry-proxy refused the gate call ({resp.status_code}): {detail}",
                                    transient=False)
            last = f"registry-proxy answered {resp.status_code}: {detail}"
        log.warning("gate call attempt %d failed: %s", attempt + 1, last)
        time.sleep(min(2**attempt, 8))
    raise RegistryError(last)
