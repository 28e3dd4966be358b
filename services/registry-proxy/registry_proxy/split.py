"""The traffic split of a model (:class:`mlops_common.rollout.RolloutSplit`), as Postgres holds it, mirrored
onto the registered model's ``mlops.rollout`` tag for the predictors.

Every change of a canary's weight or status and every shadow start or end calls :func:`write` inside the
model's governance unit: the split is read back from the unit's session (the canary under way and the shadow
running), written whole to the tag when it differs (``{"canary": null, "shadow": null}`` once nothing is
left), undone with the unit if the unit fails, and announced after the
commit with a ``ModelEvent(alias="rollout", action="rollout")`` on the alias-event channel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mlops_common.events import ModelEvent
from mlops_common.names import Tag
from mlops_common.rollout import ROLLOUT_EVENT_ALIAS, CanarySplit, RolloutSplit, ShadowSplit
from registry_proxy.db import CanaryRow, ShadowRow

if TYPE_CHECKING:
    from registry_proxy.context import AppContext
    from registry_proxy.governance import Unit

CANARY_ACTIVE = ("running", "paused", "awaiting_approval")
SHADOW_RUNNING = "running"


def running_shadow(session: Session, model: str, lock: bool = False) -> ShadowRow | None:
    query = select(ShadowRow).where(ShadowRow.model_name == model, ShadowRow.status == SHADOW_RUNNING)
    if lock:
        query = query.with_for_update()
    return session.scalars(query.limit(1)).first()


def active_canary(session: Session, model: str, lock: bool = False) -> CanaryRow | None:
    query = select(CanaryRow).where(CanaryRow.model_name == model, CanaryRow.status.in_(CANARY_ACTIVE))
    if lock:
        query = query.with_for_update()
    return session.scalars(query.limit(1)).first()


def current(session: Session, model: str) -> RolloutSplit:
    """The split the database states now (the session's pending changes included)."""
    canary = active_canary(session, model)
    shadow = running_shadow(session, model)
    return RolloutSplit(
        canary=CanarySplit(version=canary.version, weight=canary.weight) if canary is not None else None,
        shadow=ShadowSplit(version=shadow.version, share=shadow.share) if shadow is not None else None)


def as_dict(split: RolloutSplit) -> dict[str, Any]:
    return split.model_dump(mode="json")


def write(ctx: AppContext, unit: Unit, model: str) -> RolloutSplit:
    """Mirrors the split onto the model's tag (when it changed) and announces it after the commit."""
    unit.session.flush()
    split = current(unit.session, model)
    wanted = split.to_tag()
    before = ctx.registry.model_tag(model, Tag.ROLLOUT)
    if before == wanted:
        return split
    ctx.registry.set_model_tag(model, Tag.ROLLOUT, wanted)
    unit.undo.append(lambda: ctx.registry.set_model_tag(model, Tag.ROLLOUT, before))
    version = (split.canary.version if split.canary is not None
               else split.shadow.version if split.shadow is not None else None)
    event = ModelEvent(model=model, alias=ROLLOUT_EVENT_ALIAS, version=version, action="rollout")
    unit.after_commit.append(lambda: ctx.publisher.publish(event))
    return split
