"""The traffic split of one model, as registry-proxy decides it and every predictor replica follows it.

registry-proxy keeps the rollout (canary and shadow) in its database and mirrors the split onto the registered
model's ``mlops.rollout`` tag in MLflow (:data:`mlops_common.names.Tag.ROLLOUT`) each time it changes, then
publishes a :class:`mlops_common.events.ModelEvent` with ``alias="rollout"`` on Redis. Predictors already read
the registered model (aliases) from MLflow, so the same read gives them the split: no extra credential, and
several replicas keep the same split because none of them owns it.

Routing is sticky when the client sends :data:`ROLLOUT_KEY_HEADER` (a user id, a session id): the key hashes
to a bucket from 0 to 99 and the canary serves the buckets below its weight, so raising the weight only ever
moves keys towards the canary. Without a key, the bucket is drawn at random per request.
"""

from __future__ import annotations

import hashlib
import logging
import random

from pydantic import BaseModel, ConfigDict, Field, ValidationError

log = logging.getLogger(__name__)

ROLLOUT_KEY_HEADER = "X-Rollout-Key"
ROLLOUT_EVENT_ALIAS = "rollout"


class CanarySplit(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    version: str
    weight: int = Field(ge=0, le=100, description="the canary's share of traffic, %")


class ShadowSplit(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    version: str
    share: int = Field(ge=0, le=100, description="share of live requests mirrored to the shadow, %")


class RolloutSplit(BaseModel):
    """What a predictor does with a model's traffic beyond serving production."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    canary: CanarySplit | None = None
    shadow: ShadowSplit | None = None

    def to_tag(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_tag(cls, raw: str | None) -> RolloutSplit:
        """The split a tag value states; no tag, or one that does not parse, is no split (production only)."""
        if not raw:
            return cls()
        try:
            return cls.model_validate_json(raw)
        except ValidationError as exc:
            log.warning("ignoring an unreadable %s tag: %s", "mlops.rollout", exc.errors()[0].get("msg"))
            return cls()


def bucket(key: str | None) -> int:
    """0..99: stable for a key (the same key always lands in the same bucket), random without one."""
    if not key:
        return random.randrange(100)
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 100


def to_canary(split: RolloutSplit, key: str | None) -> bool:
    """Whether this request goes to the canary version."""
    canary = split.canary
    return canary is not None and canary.weight > 0 and bucket(key) < canary.weight


def mirrored(split: RolloutSplit) -> bool:
    """Whether this request is also sent to the shadow version (drawn per request)."""
    shadow = split.shadow
    return shadow is not None and shadow.share > 0 and random.randrange(100) < shadow.share
