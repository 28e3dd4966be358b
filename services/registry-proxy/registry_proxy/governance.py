"""The rules of the registry: gate, promote, rollback, approve / reject, incidents.

Each mutation runs in one database transaction that first takes a per-model Postgres advisory lock, so
concurrent changes to one model are serialized and always see the aliases the previous one left. Alias
events go out right after MLflow accepted each change; notifications after the transaction committed.
When a mutation fails part-way (MLflow or Postgres gone between two calls), the transaction rolls back and
the aliases it had already moved are moved back, newest first, so the registry and the audit log agree.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from mlops_common.contracts import GateOutcome, GateRequest, GoldenScores, ModelPolicy, decide, golden_veto
from mlops_common.events import ModelEvent
from mlops_common.mlflow_utils import CHALLENGER
from mlops_common.names import PREVIOUS_ALIAS, PRODUCTION_ALIAS, Tag
from registry_proxy import audit, policies, shadows, split
from registry_proxy.context import AppContext
from registry_proxy.db import Decision, GateCall, Incident
from registry_proxy.errors import BadRequest, Conflict, NotFound, Unavailable
from registry_proxy.metrics import GATE_CALLS, PROMOTIONS, ROLLBACKS
from registry_proxy.mlflow_registry import check_job_id, failed_validation

log = logging.getLogger(__name__)


@dataclass
class Unit:
    session: Session
    after_commit: list[Callable[[], None]] = field(default_factory=list)
    # (alias, version before, version after) for every alias this unit moved, in order: undone if it fails.
    moved: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    # Other changes to MLflow this unit made (the rollout tag), each with the call that undoes it.
    undo: list[Callable[[], None]] = field(default_factory=list)


def _now() -> datetime:
    return datetime.now(UTC)


def _score(golden: GoldenScores | None, side: str, metric: str) -> float | None:
    scores = getattr(golden, side) if golden is not None else None
    return (scores or {}).get(metric)


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def decision_dict(d: Decision, ctx: AppContext) -> dict[str, Any]:
    base = ctx.settings.public_url.rstrip("/")
    links = {
        "ui": f"{ctx.settings.ui_url}#decision-{d.id}",
        "version": f"{base}/models/{d.model_name}/versions/{d.version}",
    }
    if d.run_id:
        mlflow_base = ctx.settings.mlflow_link_base
        links["run"] = (f"{mlflow_base}/#/experiments/{d.experiment_id}/runs/{d.run_id}" if d.experiment_id
                        else f"{mlflow_base}/#/runs/{d.run_id}")
    return {
        "id": d.id,
        "model_name": d.model_name,
        "version": d.version,
        "status": d.status,
        "job_id": d.job_id,
        "run_id": d.run_id,
        "metric": {"name": d.metric_name, "higher_is_better": d.higher_is_better, "threshold": d.threshold},
        "challenger_score": d.challenger_score,
        "production_version": d.production_version,
        "production_score": d.production_score,
        "dataset_digest": d.dataset_digest,
        "reason": d.reason,
        "requested_at": _iso(d.requested_at),
        "created_at": _iso(d.created_at),
        "decided_at": _iso(d.decided_at),
        "decided_by": d.decided_by,
        "comment": d.comment,
        "evidence": d.evidence or {},
        "links": links,
    }


class Governance:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.registry = ctx.registry

    # -- plumbing -------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def unit(self, model: str) -> Iterator[Unit]:
        """A transaction holding the model's advisory lock; runs ``after_commit`` callbacks on success."""
        timeout_ms = int(self.ctx.settings.registry_lock_timeout_seconds * 1000)
        with self.ctx.sessions() as session:
            unit = Unit(session)
            try:
                with session.begin():
                    session.execute(text(f"SET LOCAL lock_timeout = {timeout_ms}"))
                    try:
                        session.execute(select(func.pg_advisory_xact_lock(func.hashtext(f"registry-proxy:{model}"))))
                    except DBAPIError as exc:
                        if "55P03" in (getattr(exc.orig, "pgcode", None), getattr(exc.orig, "sqlstate", None)):
                            raise Unavailable(f"another change to model {model!r} is still running, retry") from exc
                        raise
                    yield unit
            except BaseException:
                self._undo_aliases(model, unit)
                raise
            for callback in unit.after_commit:
                try:
                    callback()
                except Exception:
                    log.exception("after-commit callback failed")

    def _set_alias(self, unit: Unit | None, model: str, alias: str, version: str, old: str | None) -> None:
        self.registry.set_alias(model, alias, version)
        if unit is not None:
            unit.moved.append((alias, old, version))
        self.ctx.publisher.publish(ModelEvent(model=model, alias=alias, version=version, previous_version=old))

    def _delete_alias(self, unit: Unit | None, model: str, alias: str, old: str) -> None:
        self.registry.delete_alias(model, alias)
        if unit is not None:
            unit.moved.append((alias, old, None))
        self.ctx.publisher.publish(ModelEvent(model=model, alias=alias, version=None, previous_version=old,
                                              action="delete"))

    def _undo_aliases(self, model: str, unit: Unit) -> None:
        """Moves back what a failed unit moved (best effort: MLflow may be the reason it failed)."""
        for undo in reversed(unit.undo):
            try:
                undo()
            except Exception:
                log.exception("could not undo a change to %r after a failed change", model)
        for alias, old, new in reversed(unit.moved):
            try:
                if old is None:
                    self._delete_alias(None, model, alias, new or "")
                else:
                    self._set_alias(None, model, alias, old, new)
                log.warning("undid alias %s of %r after a failed change (back to %s)", alias, model, old)
            except Exception:
                log.exception("could not move alias %s of %r back to %s after a failed change", alias, model, old)

    def _notify(self, unit: Unit, event: str, model: str, **fields: Any) -> None:
        row_id = self.ctx.notifier.enqueue(unit.session, event, model, **fields)
        unit.after_commit.append(lambda: self.ctx.notifier.submit(row_id))

    def _resolve_incidents(self, session: Session, model: str, by: str) -> None:
        for incident in session.scalars(select(Incident).where(Incident.model_name == model,
                                                               Incident.resolved_at.is_(None))):
            incident.resolved_at, incident.resolved_by = _now(), by

    def _requested_at(self, session: Session, model: str, version: str) -> str | None:
        call = session.scalars(select(GateCall).where(GateCall.model_name == model, GateCall.version == version)
                               .order_by(GateCall.created_at.desc()).limit(1)).first()
        if call is not None and call.requested_at is not None:
            return _iso(call.requested_at)
        try:
            created = self.registry.get_version(model, version).creation_timestamp
        except NotFound:
            return None
        return datetime.fromtimestamp(created / 1000, UTC).isoformat() if created else None

    def _move_production(self, unit: Unit, model: str, version: str, *, actor: str, reason: str, via: str,
                         aliases: dict[str, str], requested_at: str | None = None, on_behalf_of: str | None = None,
                         metrics: dict[str, Any] | None = None, details: dict[str, Any] | None = None) -> bool:
        current = aliases.get(PRODUCTION_ALIAS)
        if current == version:
            return False
        if current:
            self._set_alias(unit, model, PREVIOUS_ALIAS, current, aliases.get(PREVIOUS_ALIAS))
            aliases[PREVIOUS_ALIAS] = current
        self._set_alias(unit, model, PRODUCTION_ALIAS, version, current)
        aliases[PRODUCTION_ALIAS] = version
        session = unit.session
        if requested_at is None:
            requested_at = self._requested_at(session, model, version)
        if metrics is None:
            run_id = self.registry.get_version(model, version).run_id
            metrics = self.registry.run_info(run_id)[0] if run_id else {}
        self._resolve_incidents(session, model, "promotion")
        self._supersede_pending(session, model, version, actor)
        self._end_shadow(unit, model, version, actor)
        audit.record(session, actor=actor, on_behalf_of=on_behalf_of, action="promote", model=model,
                     from_version=current, to_version=version,
                     reason=reason, metrics=metrics, details={"via": via, "requested_at": requested_at,
                                                              **(details or {})})
        self.registry.set_tags(model, version, {Tag.PROMOTED_AT: _now().isoformat(), Tag.PROMOTED_VIA: via})
        unit.after_commit.append(PROMOTIONS.labels(model_name=model).inc)
        self._notify(unit, "promotion", model, version=version, from_version=current, reason=reason,
                     metrics=metrics, via=via, actor=actor)
        return True

    def _end_shadow(self, unit: Unit, model: str, production: str, actor: str) -> None:
        """Production moved: a running shadow either became production or lost the baseline it was compared with."""
        shadow = split.running_shadow(unit.session, model, lock=True)
        if shadow is not None:
            promoted = shadow.version == production
            shadows.end(self.ctx, unit, shadow, "promoted" if promoted else "stopped", actor,
                        "the shadow became production" if promoted
                        else f"production moved to version {production}, the baseline it was compared with is gone")

    def _supersede_pending(self, session: Session, model: str, production: str, actor: str) -> None:
        """Production moved to ``production``: every other pending decision of the model compared its challenger
        with a production that is gone, so it can no longer be acted on. Approving one would swap the new
        production for an older candidate judged against the wrong baseline; retrain to ask again."""
        stale = session.scalars(select(Decision).where(Decision.model_name == model, Decision.status == "pending",
                                                       Decision.version != production).with_for_update()).all()
        for decision in stale:
            decision.status = "superseded"
            decision.decided_at, decision.decided_by = _now(), actor
            decision.comment = f"production moved to version {production} before this was decided"
            self.registry.set_tags(model, decision.version, {Tag.DECISION: "superseded", Tag.DECISION_ID: decision.id})
            audit.record(session, actor=actor, action="supersede", model=model,
                         from_version=decision.production_version, to_version=decision.version,
                         reason=decision.comment, details={"decision_id": decision.id})

    def _pending_for(self, session: Session, model: str, version: str) -> Decision | None:
        return session.scalars(select(Decision).where(Decision.model_name == model, Decision.version == version,
                                                      Decision.status == "pending")).first()

    # The steps other rollout operations (canaries) build on, inside a unit of their own.
    set_alias = _set_alias
    delete_alias = _delete_alias
    notify = _notify
    move_production = _move_production

    # -- operations -----------------------------------------------------------------------------------

    def promote(self, model: str, version: str, reason: str, actor: str) -> dict[str, Any]:
        with self.unit(model) as unit:
            mv = self.registry.get_version(model, version)
            aliases = self.registry.aliases(model)
            if aliases.get(PRODUCTION_ALIAS) == version:
                return {"model_name": model, "production_version": version, "previous_version":
                        aliases.get(PREVIOUS_ALIAS), "changed": False}
            why = failed_validation(mv)
            if why:
                raise Conflict(f"cannot promote: {why}")
            pending = self._pending_for(unit.session, model, version)
            if pending is not None:
                raise Conflict(f"version {version} awaits decision {pending.id}: "
                               f"approve it with POST /decisions/{pending.id}/approve")
            shadows.require(self.ctx, unit.session, model, version, mv.tags, "promote")
            self._move_production(unit, model, version, actor=actor, reason=reason, via="promote",
                                  aliases=aliases)
        return {"model_name": model, "production_version": version, "previous_version": aliases.get(PREVIOUS_ALIAS),
                "changed": True}

    def rollback(self, model: str, reason: str, actor: str) -> dict[str, Any]:
        self.registry.get_model(model)
        with self.unit(model) as unit:
            aliases = self.registry.aliases(model)
            target = aliases.get(PREVIOUS_ALIAS)
            if not target:
                raise Conflict(f"model {model!r} has no previous version to roll back to")
            current = aliases.get(PRODUCTION_ALIAS)
            self._set_alias(unit, model, PRODUCTION_ALIAS, target, current)
            # The rolled-back version is not a safe rollback target: `previous` is cleared.
            self._delete_alias(unit, model, PREVIOUS_ALIAS, target)
            if current:
                self.registry.set_tags(model, current, {Tag.ROLLED_BACK_AT: _now().isoformat()})
            self._resolve_incidents(unit.session, model, "rollback")
            self._supersede_pending(unit.session, model, target, actor)
            self._end_shadow(unit, model, target, actor)
            audit.record(unit.session, actor=actor, action="rollback", model=model, from_version=current,
                         to_version=target, reason=reason)
            unit.after_commit.append(ROLLBACKS.labels(model_name=model).inc)
            self._notify(unit, "rollback", model, version=target, from_version=current, reason=reason, actor=actor)
        return {"model_name": model, "production_version": target, "rolled_back_version": current,
                "previous_version": None}

    def gate(self, model: str, req: GateRequest, actor: str) -> dict[str, Any]:
        """Registers the job's model, applies this model's own policy and golden set to the reported scores,
        and acts on the outcome. The trainer's own reading (``trainer_outcome``) is recorded, never trusted."""
        check_job_id(req.job_id)
        with self.unit(model) as unit:
            session = unit.session
            existing = session.get(GateCall, req.job_id)
            if existing is not None:
                if existing.model_name != model:
                    raise Conflict(f"job_id {req.job_id!r} was already gated for model {existing.model_name!r}")
                return dict(existing.response)
            policy = policies.in_force(session, self.ctx.settings, model, req.spec_policy,
                                       req.requested_by or actor)
            challenger = req.challenger_metrics.get(policy.metric)
            if challenger is None:
                raise BadRequest(f"the gate report has no {policy.metric!r} score, the metric of the model's "
                                    f"policy (it has: {', '.join(sorted(req.challenger_metrics)) or 'none'})")
            mv = self.registry.register(model, req.model_uri, req.run_id, req.job_id,
                                        {Tag.DATASET_SHA256: req.dataset_digest or ""})
            version = str(mv.version)
            aliases = self.registry.aliases(model)
            production_before = aliases.get(PRODUCTION_ALIAS)
            if aliases.get(CHALLENGER) != version:
                self._set_alias(unit, model, CHALLENGER, version, aliases.get(CHALLENGER))
                aliases[CHALLENGER] = version
            # Production's score counts only if it is the version that holds the alias now.
            production = None
            if production_before is not None and req.production_version == production_before:
                production = (req.production_metrics or {}).get(policy.metric)
            outcome, reason = decide(policy, challenger, production, production_before)
            pinned = policies.pinned_sha(session, model)
            if outcome == "promoted":
                veto = golden_veto(policy, req.golden, pinned, production_before is not None)
                if veto:
                    outcome, reason = "pending_approval", f"{reason}; but {veto}: a human decides"
            shadow_policy = (policies.rollout_policy(session, model) or ModelPolicy()).shadow
            auto_shadow = False
            if outcome == "promoted" and shadow_policy is not None and production_before is not None:
                outcome = "pending_approval"
                running = split.running_shadow(session, model, lock=True)
                if shadow_policy.auto and running is None:
                    auto_shadow = True
                    reason = (f"{reason}; the policy requires a shadow period: version {version} now gets "
                              f"{shadow_policy.share}% of live requests in shadow, approve once it has the evidence")
                elif shadow_policy.auto and running is not None:
                    reason = (f"{reason}; the policy requires a shadow period, but version {running.version} is in "
                              f"shadow now: stop it (DELETE /models/{model}/shadow) and start this one")
                else:
                    reason = (f"{reason}; the policy requires a shadow period first "
                              f"(POST /models/{model}/shadow), then approve")
            golden = req.golden.model_dump(mode="json") if req.golden else None
            metrics = {
                "metric": policy.metric, "higher_is_better": policy.higher_is_better,
                "threshold": policy.threshold, "margin": policy.margin,
                "challenger_score": challenger, "production_score": production,
                "production_version": production_before,
                "golden_challenger_score": _score(req.golden, "challenger", policy.metric),
                "golden_production_score": _score(req.golden, "production", policy.metric),
            }
            requested_at = _iso(req.requested_at)
            gate = Tag.GATE_PREFIX
            self.registry.set_tags(model, version, {
                Tag.GATE_OUTCOME: outcome,
                f"{gate}metric": policy.metric,
                Tag.GATE_CHALLENGER_SCORE: challenger,
                f"{gate}production_score": production,
                f"{gate}production_version": production_before,
                f"{gate}threshold": policy.threshold,
                f"{gate}golden_sha256": pinned,
                f"{gate}golden_challenger_score": metrics["golden_challenger_score"],
                f"{gate}golden_production_score": metrics["golden_production_score"],
                f"{gate}dataset_digest": req.dataset_digest,
                f"{gate}run_id": req.run_id,
                f"{gate}job_id": req.job_id,
                f"{gate}requested_at": requested_at,
                f"{gate}requested_by": req.requested_by,
                f"{gate}reason": reason[:500],
            })
            details = {"job_id": req.job_id, "run_id": req.run_id, "dataset_digest": req.dataset_digest,
                       "outcome": outcome, "trainer_outcome": req.trainer_outcome, "requested_at": requested_at,
                       "golden": golden, "golden_sha256": pinned}
            audit.record(session, actor=actor, on_behalf_of=req.requested_by, action="gate", model=model,
                         from_version=production_before, to_version=version, reason=reason, metrics=metrics,
                         details=details)
            decision_id: int | None = None
            if outcome == "promoted":
                self._move_production(unit, model, version, actor=actor, on_behalf_of=req.requested_by,
                                      reason=reason, via="gate", aliases=aliases, requested_at=requested_at,
                                      metrics=metrics, details={"job_id": req.job_id, "run_id": req.run_id})
                if req.test_split_sha256:
                    policies.propose_golden(session, model, req.test_split_sha256, req.test_split_rows, actor,
                                            version)
            elif outcome == "pending_approval":
                experiment_id = self.registry.run_info(req.run_id)[1]
                decision = Decision(
                    model_name=model, version=version, status="pending", job_id=req.job_id, run_id=req.run_id,
                    experiment_id=experiment_id, metric_name=policy.metric,
                    higher_is_better=policy.higher_is_better, threshold=policy.threshold,
                    challenger_score=challenger, production_version=production_before,
                    production_score=production, dataset_digest=req.dataset_digest, reason=reason,
                    requested_at=req.requested_at,
                    evidence={"golden": golden, "golden_sha256": pinned, "requested_by": req.requested_by,
                              "production_error": req.production_error})
                if auto_shadow:
                    row = shadows.begin(self.ctx, unit, model, version, shadow_policy.share if shadow_policy else 100,
                                        production_before, actor, "the gate passed it; the policy asks for a shadow "
                                        "period", on_behalf_of=req.requested_by)
                    decision.evidence = {**(decision.evidence or {}), "shadow": {"id": row.id, "share": row.share}}
                session.add(decision)
                session.flush()
                decision_id = decision.id
                view = decision_dict(decision, self.ctx)
                self._notify(unit, "pending_decision", model, version=version, from_version=production_before,
                             reason=reason, metrics=metrics, decision_id=view["id"], decision=view)
            result = GateOutcome(outcome=outcome, reason=reason, version=version, decision_id=decision_id,
                                 production_version=aliases.get(PRODUCTION_ALIAS), policy=policy, golden=req.golden)
            response = result.model_dump(mode="json")
            session.add(GateCall(job_id=req.job_id, model_name=model, version=version, outcome=outcome,
                                 requested_at=req.requested_at, request=req.model_dump(mode="json"),
                                 response=response))
            unit.after_commit.append(GATE_CALLS.labels(model_name=model, outcome=outcome).inc)
        return response

    def decisions(self, status: str | None = None, model: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Decisions, newest first."""
        query = select(Decision).order_by(Decision.id.desc()).limit(limit)
        if status:
            query = query.where(Decision.status == status)
        if model:
            query = query.where(Decision.model_name == model)
        with self.ctx.sessions() as session:
            return [decision_dict(d, self.ctx) for d in session.scalars(query)]

    def decision(self, decision_id: int) -> dict[str, Any]:
        return decision_dict(self._decision(decision_id), self.ctx)

    def _decision(self, decision_id: int) -> Decision:
        with self.ctx.sessions() as session:
            decision = session.get(Decision, decision_id)
        if decision is None:
            raise NotFound(f"decision {decision_id} not found")
        return decision

    def decide(self, decision_id: int, approve: bool, comment: str, actor: str) -> dict[str, Any]:
        model = self._decision(decision_id).model_name
        with self.unit(model) as unit:
            session = unit.session
            decision = session.get(Decision, decision_id, with_for_update=True)
            assert decision is not None
            if decision.status != "pending":
                raise Conflict(f"decision {decision_id} was already {decision.status}")
            aliases = self.registry.aliases(model)
            if approve:
                mv = self.registry.get_version(model, decision.version)
                shadows.require(self.ctx, session, model, decision.version, mv.tags, "approve")
                metrics = {"metric": decision.metric_name, "threshold": decision.threshold,
                           "challenger_score": decision.challenger_score,
                           "production_score": decision.production_score}
                self._move_production(unit, model, decision.version, actor=actor,
                                      reason=comment or f"decision {decision_id} approved", via="approval",
                                      aliases=aliases, requested_at=_iso(decision.requested_at), metrics=metrics,
                                      details={"decision_id": decision_id, "job_id": decision.job_id})
                call = session.get(GateCall, decision.job_id) if decision.job_id else None
                split = (call.request or {}).get("test_split_sha256") if call is not None else None
                if split and call is not None:
                    policies.propose_golden(session, model, split, call.request.get("test_split_rows"), actor,
                                            decision.version)
            decision.status = "approved" if approve else "rejected"
            decision.decided_at, decision.decided_by, decision.comment = _now(), actor, comment or None
            self.registry.set_tags(model, decision.version,
                                   {Tag.DECISION: decision.status, Tag.DECISION_ID: decision_id})
            audit.record(session, actor=actor, action="approve" if approve else "reject", model=model,
                         from_version=decision.production_version, to_version=decision.version, reason=comment,
                         details={"decision_id": decision_id})
            view = decision_dict(decision, self.ctx)
        return {**view, "production_version": aliases.get(PRODUCTION_ALIAS)}

    def open_incident(self, model: str, reason: str, actor: str) -> dict[str, Any]:
        self.registry.get_model(model)
        with self.unit(model) as unit:
            production = self.registry.aliases(model).get(PRODUCTION_ALIAS)
            incident = Incident(model_name=model, version=production, reason=reason, opened_by=actor)
            unit.session.add(incident)
            unit.session.flush()
            audit.record(unit.session, actor=actor, action="incident", model=model, from_version=production,
                         reason=reason, details={"incident_id": incident.id})
            self._notify(unit, "incident", model, version=production, reason=reason, actor=actor)
            result = {"id": incident.id, "model_name": model, "version": production, "reason": reason,
                      "opened_by": actor, "opened_at": _iso(incident.opened_at)}
        return result
