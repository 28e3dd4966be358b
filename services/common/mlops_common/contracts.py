"""The typed contracts between the services: what the trainer sends to registry-proxy's gate and what it
answers, a model's gate policy and golden set. One definition, imported by both sides.

The gate's rules live here too (:func:`decide`), as a pure function of a policy and scores, so the trainer
can show a preview while registry-proxy applies them with the policy it owns.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Outcome = Literal["promoted", "kept", "pending_approval"]
SHA256 = r"^[0-9a-f]{64}$"


class GatePolicy(BaseModel):
    """What a challenger must score to replace production: owned by registry-proxy, changed by approvers."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    metric: str = Field("f1_macro", min_length=1, max_length=64)
    higher_is_better: bool = True
    # The production bar; None means any score meets it.
    threshold: float | None = None
    # The challenger must beat production by more than this to be promoted.
    margin: float = Field(0.0, ge=0)

    def better(self, a: float, b: float) -> bool:
        """True when score ``a`` beats ``b`` by more than the margin."""
        return a - b > self.margin if self.higher_is_better else b - a > self.margin

    def worse(self, a: float, b: float) -> bool:
        """True when score ``a`` is worse than ``b`` by more than the margin."""
        return self.better(b, a)

    def meets(self, value: float) -> bool:
        if self.threshold is None:
            return True
        return value >= self.threshold if self.higher_is_better else value <= self.threshold


class PolicyView(GatePolicy):
    """A policy as registry-proxy stores it: versioned, with who set it and why."""

    model_config = ConfigDict(extra="ignore")

    model_name: str
    revision: int
    set_by: str
    reason: str | None = None
    set_at: datetime | None = None


class GoldenSetView(BaseModel):
    """A model's golden set: a content-addressed dataset snapshot every gate scores both versions on."""

    model_name: str
    sha256: str = Field(pattern=SHA256)
    status: Literal["pinned", "proposed"]
    source: str | None = None
    rows: int | None = None
    set_by: str
    set_at: datetime | None = None


def _finite(scores: dict[str, float] | None) -> dict[str, float] | None:
    if scores is None:
        return None
    bad = [k for k, v in scores.items() if not math.isfinite(v)]
    if bad:
        raise ValueError(f"scores must be finite numbers: {', '.join(bad)}")
    return scores


class GoldenScores(BaseModel):
    """Both versions scored on the golden set the trainer was given (``sha256``)."""

    model_config = ConfigDict(extra="forbid")

    sha256: str = Field(pattern=SHA256)
    challenger: dict[str, float] | None = None
    production: dict[str, float] | None = None
    # Why a score is missing (the snapshot was gone, a version failed to load, ...).
    error: str | None = Field(None, max_length=2000)

    _finite = field_validator("challenger", "production")(_finite)


class GateRequest(BaseModel):
    """The trainer's report of one retrain job. registry-proxy registers the model, applies its own policy
    to these scores and answers with a :class:`GateOutcome`. Idempotent per ``job_id``."""

    # A contract between services: unknown fields from a newer trainer are ignored, not refused.
    model_config = ConfigDict(extra="ignore")

    job_id: str = Field(min_length=1, max_length=200)
    run_id: str = Field(min_length=1, max_length=64)
    # The logged model to register (``models:/m-…`` or ``runs:/<run>/model``).
    model_uri: str = Field(min_length=1, max_length=500)
    # The person (principal) who asked for the retrain, when known.
    requested_by: str | None = Field(None, max_length=64)
    requested_at: datetime | None = None
    # Every metric of the task, on the job's fresh test split.
    challenger_metrics: dict[str, float]
    production_version: str | None = Field(None, pattern=r"^[0-9]+$")
    production_metrics: dict[str, float] | None = None
    production_error: str | None = Field(None, max_length=2000)
    golden: GoldenScores | None = None
    dataset_digest: str | None = Field(None, max_length=128)
    # The job's test split as a content-addressed snapshot: proposed as the golden set of a model without one.
    test_split_sha256: str | None = Field(None, pattern=SHA256)
    test_split_rows: int | None = Field(None, ge=0)
    # The metric block of the spec the job trained with: seeds the policy of a model that has no spec file and
    # was never gated; ignored once the model has a policy.
    spec_policy: GatePolicy | None = None
    # The trainer's own reading of the gate (recorded, never trusted).
    trainer_outcome: Outcome | None = None

    _finite = field_validator("challenger_metrics", "production_metrics")(_finite)


class GateOutcome(BaseModel):
    outcome: Outcome
    reason: str
    version: str
    decision_id: int | None = None
    production_version: str | None = None
    policy: GatePolicy
    golden: GoldenScores | None = None


def decide(policy: GatePolicy, challenger: float, production: float | None,
           production_version: str | None) -> tuple[Outcome, str]:
    """The gate on one split: promote a challenger that beats production and meets the bar; keep a production
    that still meets it; otherwise ask a human."""
    name = policy.metric
    bar = "no threshold" if policy.threshold is None else f"threshold {policy.threshold}"
    if production_version is None:
        if policy.meets(challenger):
            return "promoted", f"no production version; challenger {name}={challenger:.4f} meets {bar}"
        return "pending_approval", f"no production version and challenger {name}={challenger:.4f} misses {bar}"
    if production is None:
        return "pending_approval", (f"production version {production_version} could not be evaluated on the new "
                                    f"test split; challenger {name}={challenger:.4f} needs a human decision")
    if policy.better(challenger, production) and policy.meets(challenger):
        return "promoted", (f"challenger {name}={challenger:.4f} beats production v{production_version} "
                            f"({production:.4f}) by more than {policy.margin} and meets {bar}")
    if policy.meets(production):
        return "kept", (f"production v{production_version} {name}={production:.4f} still meets {bar}; challenger "
                        f"{challenger:.4f} does not beat it by more than {policy.margin}"
                        + ("" if policy.meets(challenger) else f" and misses {bar}"))
    return "pending_approval", (f"neither meets {bar}: challenger {name}={challenger:.4f}, production "
                                f"v{production_version} {production:.4f}")


def golden_veto(policy: GatePolicy, golden: GoldenScores | None, pinned_sha256: str | None,
                has_production: bool) -> str | None:
    """Why a promotion must wait for a human because of the golden set, or None when the golden set allows it.

    With a pinned golden set, the challenger must have been scored on exactly that snapshot, meet the
    threshold there, and not be worse than production there by more than the margin."""
    if pinned_sha256 is None:
        return None
    name = policy.metric
    if golden is None or golden.sha256 != pinned_sha256:
        return f"the challenger was not scored on the pinned golden set {pinned_sha256[:12]}"
    if golden.challenger is None or name not in golden.challenger:
        return f"the challenger could not be scored on the golden set: {golden.error or 'no score'}"
    challenger = golden.challenger[name]
    if not policy.meets(challenger):
        return f"on the golden set the challenger's {name}={challenger:.4f} misses threshold {policy.threshold}"
    if has_production:
        if golden.production is None or name not in golden.production:
            return f"production could not be scored on the golden set: {golden.error or 'no score'}"
        production = golden.production[name]
        if policy.worse(challenger, production):
            return (f"on the golden set the challenger's {name}={challenger:.4f} is worse than production's "
                    f"{production:.4f} by more than {policy.margin}")
    return None
