"""The trainer's side of the promotion gate: registry-proxy owns the policy, registers the version and decides
(``mlops_common.contracts``). The trainer reads a model's golden set, sends its scores, and may show its own
reading of the rules with the spec's metric (:func:`preview`), which registry-proxy records but never trusts."""

from __future__ import annotations

import logging
import re
from typing import Any

import httpx
from pydantic import ValidationError
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from mlops_common import contracts
from mlops_common.contracts import GatePolicy, Outcome
from mlops_common.spec import MetricSpec

log = logging.getLogger(__name__)


class RegistryError(RuntimeError):
    def __init__(self, message: str, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


def policy_of(metric: MetricSpec) -> GatePolicy:
    """The spec's metric block as a policy: sent as ``spec_policy`` (it seeds the policy of a model registry-proxy
    never gated) and used for the trainer's preview."""
    return GatePolicy(metric=metric.name, higher_is_better=metric.higher_is_better, threshold=metric.threshold,
                      margin=max(metric.margin, 0.0))


def preview(metric: MetricSpec, challenger: float, production: float | None,
            production_version: str | None) -> tuple[Outcome, str] | None:
    """The gate's rules (``contracts.decide``) applied with the spec's metric: the trainer's own reading,
    sent as ``trainer_outcome``; None when the spec's metric cannot be a policy."""
    try:
        return contracts.decide(policy_of(metric), challenger, production, production_version)
    except ValidationError:
        return None


def _headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _detail(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:500]
    if isinstance(body, dict) and "detail" in body:
        detail = body["detail"]
        return (detail if isinstance(detail, str) else str(detail))[:500]
    return resp.text[:500]


def golden_set(registry_url: str, token: str, model_name: str, timeout: float = 30.0) -> dict[str, Any] | None:
    """``GET /models/{name}/golden-set``: the model's golden set (at least ``sha256`` and ``status``, see
    ``contracts.GoldenSetView``), or None when it has none (404). :class:`RegistryError` when registry-proxy
    cannot be asked or answers something else."""
    url = f"{registry_url.rstrip('/')}/models/{model_name}/golden-set"
    try:
        resp = httpx.get(url, headers=_headers(token), timeout=timeout)
    except httpx.HTTPError as exc:
        raise RegistryError(f"registry-proxy unreachable at {registry_url}: {exc}") from exc
    if resp.status_code == 404:
        return None
    if resp.status_code >= 300:
        raise RegistryError(f"GET golden-set answered {resp.status_code}: {_detail(resp)}",
                            transient=resp.status_code >= 500)
    try:
        body = resp.json()
        sha, status = body["sha256"], body["status"]
    except (ValueError, KeyError, TypeError) as exc:
        raise RegistryError(f"GET golden-set answered an unreadable golden set: {resp.text[:200]}",
                            transient=False) from exc
    if not isinstance(sha, str) or not re.fullmatch(contracts.SHA256, sha) or status not in ("pinned", "proposed"):
        raise RegistryError(f"GET golden-set answered an unreadable golden set: {resp.text[:200]}",
                            transient=False)
    return body


def call_registry(registry_url: str, token: str, model_name: str, payload: dict[str, Any],
                  timeout: float = 30.0, attempts: int = 3) -> dict[str, Any]:
    """``POST /models/{name}/gate``; retried on connection errors and 5xx (the call is idempotent per job), with
    exponential backoff (1 s, 2 s, ... at most 8 s) and jitter."""
    url = f"{registry_url.rstrip('/')}/models/{model_name}/gate"

    def call() -> dict[str, Any]:
        try:
            resp = httpx.post(url, json=payload, headers=_headers(token), timeout=timeout)
        except httpx.HTTPError as exc:
            raise RegistryError(f"registry-proxy unreachable at {registry_url}: {exc}") from exc
        if resp.status_code < 300:
            answer: dict[str, Any] = resp.json()
            return answer
        detail = _detail(resp)
        if resp.status_code < 500:
            raise RegistryError(f"registry-proxy refused the gate call ({resp.status_code}): {detail}",
                                transient=False)
        raise RegistryError(f"registry-proxy answered {resp.status_code}: {detail}")

    def failed(state: RetryCallState) -> None:
        log.warning("gate call attempt %d failed: %s", state.attempt_number,
                    state.outcome.exception() if state.outcome else "?")

    retrying = Retrying(stop=stop_after_attempt(attempts), wait=wait_exponential_jitter(initial=1, max=8, jitter=1),
                        retry=retry_if_exception(lambda exc: isinstance(exc, RegistryError) and exc.transient),
                        after=failed, reraise=True)
    return retrying(call)
