"""Each model's gate policy and golden set, owned here.

A policy is seeded from ``models/<name>.yaml`` the first time the model is gated (or, for a model without a
spec file, from the metric of the spec its first job trained with), then changed only by approvers. Every
revision is kept and every change audited. The golden set is a content-addressed dataset snapshot pinned by
an approver; a first promotion proposes one from its test split, which an approver pins (or replaces).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from mlops_common.contracts import CanaryPolicy, GatePolicy, GoldenSetView, ModelPolicy, PolicyView, ShadowPolicy
from mlops_common.spec import load_spec_file, spec_path
from registry_proxy import audit
from registry_proxy.db import GoldenSetRow, PolicyRow
from registry_proxy.errors import BadRequest, NotFound
from registry_proxy.settings import RegistrySettings


def _view(row: PolicyRow) -> PolicyView:
    return PolicyView(model_name=row.model_name, revision=row.revision, set_by=row.set_by, reason=row.reason,
                      set_at=row.set_at, **_whole(row).model_dump())


def _whole(row: PolicyRow) -> ModelPolicy:
    return ModelPolicy(**_fields(row),
                       canary=CanaryPolicy(**row.canary) if row.canary else None,
                       shadow=ShadowPolicy(**row.shadow) if row.shadow else None)


def current_row(session: Session, model: str) -> PolicyRow | None:
    return session.scalars(select(PolicyRow).where(PolicyRow.model_name == model)
                           .order_by(PolicyRow.revision.desc()).limit(1)).first()


def from_spec_file(settings: RegistrySettings, model: str) -> GatePolicy | None:
    """The policy a model's spec file declares (its ``metric`` block), or None without a file."""
    try:
        raw = load_spec_file(settings.models_dir, model)
    except ValueError:
        return None
    if raw is None:
        return None
    metric = dict(raw.get("metric") or {})
    try:
        return GatePolicy(metric=metric.get("name", "f1_macro"),
                          higher_is_better=metric.get("higher_is_better", True),
                          threshold=metric.get("threshold"), margin=metric.get("margin", 0.0))
    except ValidationError as exc:
        raise BadRequest(f"the metric block of {spec_path(settings.models_dir, model)} is invalid: {exc}") from exc


def get(session: Session, settings: RegistrySettings, model: str) -> PolicyView:
    """The policy in force; before the first gate, the one the spec file would seed (revision 0)."""
    row = current_row(session, model)
    if row is not None:
        return _view(row)
    seed = from_spec_file(settings, model)
    if seed is None:
        raise NotFound(f"model {model!r} has no gate policy yet (no models/{model}.yaml and never gated)")
    return PolicyView(model_name=model, revision=0, set_by=f"models/{model}.yaml",
                      reason="from the spec file; stored at the first gate", **seed.model_dump())


def put(session: Session, model: str, policy: GatePolicy, actor: str, reason: str | None,
        action: str = "policy", keep: frozenset[str] = frozenset()) -> PolicyView:
    """A new revision; the blocks named in ``keep`` (``canary``, ``shadow``) are carried over from the one in force."""
    before = current_row(session, model)
    whole = policy if isinstance(policy, ModelPolicy) else ModelPolicy(**policy.model_dump())
    if before is not None and keep:
        whole = whole.model_copy(update={block: getattr(_whole(before), block) for block in keep})
    revision = (session.scalar(select(func.max(PolicyRow.revision)).where(PolicyRow.model_name == model)) or 0) + 1
    row = PolicyRow(model_name=model, revision=revision, set_by=actor, reason=reason, **whole.model_dump())
    session.add(row)
    session.flush()
    audit.record(session, actor=actor, action=action, model=model, reason=reason,
                 metrics={"before": _whole(before).model_dump() if before else None, "after": whole.model_dump()},
                 details={"revision": revision})
    return _view(row)


def rollout_policy(session: Session, model: str) -> ModelPolicy | None:
    """The whole policy in force (with its canary and shadow blocks), None before the model's first gate."""
    row = current_row(session, model)
    return _whole(row) if row is not None else None


def _fields(row: PolicyRow) -> dict[str, Any]:
    return {"metric": row.metric, "higher_is_better": row.higher_is_better, "threshold": row.threshold,
            "margin": row.margin}


def in_force(session: Session, settings: RegistrySettings, model: str, seed: GatePolicy | None,
             actor: str) -> GatePolicy:
    """The policy the gate applies, stored on first use: from the spec file, else from ``seed``."""
    row = current_row(session, model)
    if row is not None:
        return GatePolicy(**_fields(row))
    from_file = from_spec_file(settings, model)
    if from_file is not None:
        return put(session, model, from_file, "registry-proxy", f"seeded from models/{model}.yaml",
                   action="policy.seed")
    if seed is None:
        raise BadRequest(f"model {model!r} has no gate policy: set one with PUT /models/{model}/policy")
    return put(session, model, seed, actor, "seeded from the spec of the model's first retrain job",
               action="policy.seed")


def golden_view(row: GoldenSetRow) -> GoldenSetView:
    return GoldenSetView(model_name=row.model_name, sha256=row.sha256, status=row.status,
                         source=row.source, rows=row.rows, set_by=row.set_by, set_at=row.set_at)


def golden(session: Session, model: str) -> GoldenSetRow | None:
    return session.get(GoldenSetRow, model)


def pinned_sha(session: Session, model: str) -> str | None:
    row = golden(session, model)
    return row.sha256 if row is not None and row.status == "pinned" else None


def pin_golden(session: Session, model: str, sha256: str, actor: str, reason: str | None, source: str | None,
               rows: int | None) -> GoldenSetView:
    row = golden(session, model)
    before = golden_view(row).model_dump(mode="json") if row else None
    if row is None:
        row = GoldenSetRow(model_name=model, sha256=sha256, status="pinned", set_by=actor, source=source, rows=rows)
        session.add(row)
    else:
        if row.sha256 != sha256:
            row.source, row.rows = source, rows
        elif source or rows is not None:
            row.source, row.rows = source or row.source, rows if rows is not None else row.rows
        row.sha256, row.status, row.set_by, row.set_at = sha256, "pinned", actor, func.now()
    session.flush()
    audit.record(session, actor=actor, action="golden_set.pin", model=model, reason=reason,
                 details={"sha256": sha256, "before": before})
    session.refresh(row)
    return golden_view(row)


def propose_golden(session: Session, model: str, sha256: str, rows: int | None, actor: str, version: str) -> None:
    if golden(session, model) is not None:
        return
    session.add(GoldenSetRow(model_name=model, sha256=sha256, status="proposed", set_by=actor, rows=rows,
                             source=f"test split of version {version}"))
    session.flush()
    audit.record(session, actor=actor, action="golden_set.propose", model=model, to_version=version,
                 reason="proposed from the test split of the model's first promoted run; an approver pins it",
                 details={"sha256": sha256, "rows": rows})


def remove_golden(session: Session, model: str, actor: str, reason: str | None) -> None:
    row = golden(session, model)
    if row is None:
        raise NotFound(f"model {model!r} has no golden set")
    audit.record(session, actor=actor, action="golden_set.remove", model=model, reason=reason,
                 details={"sha256": row.sha256, "status": row.status})
    session.delete(row)


@dataclass
class Policies:
    """The policy and golden-set operations the API offers, each in its own transaction."""

    sessions: sessionmaker
    settings: RegistrySettings

    def get(self, model: str) -> PolicyView:
        with self.sessions() as session:
            return get(session, self.settings, model)

    def put(self, model: str, policy: GatePolicy, actor: str, reason: str,
            keep: frozenset[str] = frozenset()) -> PolicyView:
        with self.sessions() as session, session.begin():
            return put(session, model, policy, actor, reason, keep=keep)

    def rollout(self, model: str) -> ModelPolicy | None:
        with self.sessions() as session:
            return rollout_policy(session, model)

    def golden_set(self, model: str) -> GoldenSetView:
        with self.sessions() as session:
            row = golden(session, model)
            if row is None:
                raise NotFound(f"model {model!r} has no golden set")
            return golden_view(row)

    def pin_golden(self, model: str, sha256: str, actor: str, reason: str | None, source: str | None,
                   rows: int | None) -> GoldenSetView:
        with self.sessions() as session, session.begin():
            return pin_golden(session, model, sha256, actor, reason, source, rows)

    def remove_golden(self, model: str, actor: str, reason: str | None) -> None:
        with self.sessions() as session, session.begin():
            remove_golden(session, model, actor, reason)
