"""The typed contracts between the services: what the trainer sends to registry-proxy's gate and what it
answers, a model's gate policy and golden set. One definition, imported by both sides.

The gate's rules live here too (:func:`decide`), as a pure function of a policy and scores, so the trainer
can show a preview while registry-proxy applies them with the policy it owns.
"""

from __future__ import annotations

import itertools
import math
import re
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


DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
MIN_INTERVAL_SECONDS, MAX_INTERVAL_SECONDS = 1.0, 24 * 3600.0


def duration_seconds(text: str) -> float:
    """``"2m"`` -> 120.0; units ms, s, m, h."""
    match = DURATION.match(text.strip())
    if match is None:
        raise ValueError("a duration is a number and a unit: 30s, 2m, 1h")
    return float(match.group(1)) * UNIT_SECONDS[match.group(2)]


def check_steps(steps: list[int] | None) -> list[int] | None:
    """A canary's steps: shares of traffic from 1 to 100, increasing, ending at 100."""
    if steps is None:
        return None
    if any(not 1 <= s <= 100 for s in steps):
        raise ValueError("every step is a share of traffic from 1 to 100")
    if any(b <= a for a, b in itertools.pairwise(steps)):
        raise ValueError("steps must increase")
    if not steps or steps[-1] != 100:
        raise ValueError("the last step must be 100")
    return steps


def check_interval(value: str | None) -> str | None:
    """A canary step's length: 1s to 24h."""
    if value is None:
        return None
    seconds = duration_seconds(value)
    if not MIN_INTERVAL_SECONDS <= seconds <= MAX_INTERVAL_SECONDS:
        raise ValueError("the interval must be from 1s to 24h")
    return value.strip()


class CanaryPolicy(BaseModel):
    """A model's canary defaults: what ``POST /models/{name}/canary`` uses for every field its body leaves out."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    max_error_ratio: float | None = Field(None, ge=0, le=1)
    max_p99_seconds: float | None = Field(None, gt=0)
    max_quality_drop: float | None = Field(None, ge=0, le=1)
    steps: list[int] | None = Field(None, min_length=1, max_length=20)
    interval: str | None = None
    require_approval: bool | None = None

    _steps = field_validator("steps")(check_steps)
    _interval = field_validator("interval")(check_interval)


class ShadowPolicy(BaseModel):
    """The shadow period a challenger must pass before it is promoted or a canary of it starts."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    min_requests: int = Field(0, ge=0, description="live requests compared with production")
    min_seconds: float = Field(0, ge=0, description="time in shadow")
    min_agreement: float | None = Field(None, ge=0, le=1, description="share of answers equal to production's")
    auto: bool = Field(False, description="a challenger that passes the gate goes to shadow on its own")
    share: int = Field(100, ge=1, le=100, description="share of live requests mirrored when started by the gate")


class ModelPolicy(GatePolicy):
    """A model's whole policy: the gate's bar plus, optionally, its canary defaults and shadow requirement."""

    canary: CanaryPolicy | None = None
    shadow: ShadowPolicy | None = None


class PolicyView(ModelPolicy):
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
