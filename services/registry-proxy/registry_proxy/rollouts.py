"""Rollouts: canaries (a version takes a growing share of traffic, step by step, while Prometheus says it is
healthy) and shadow periods (a version gets a copy of a share of live requests; see :mod:`shadows`).

The split lives here (Postgres), not in a predictor, and is mirrored onto the registered model's
``mlops.rollout`` tag (:mod:`split`) at every change, so every replica of the predictor follows the same one;
``GET /models/{name}/rollout`` shows it. The canary version also holds the ``canary`` alias while the canary
is under way. A background loop (:class:`CanaryLoop`, one per process) advances every running canary whose
step is due; each advance runs in the model's governance unit (its advisory lock) and takes the canary's row
with ``FOR UPDATE SKIP LOCKED``, so several replicas never analyse the same step twice, and a restarted
process picks the canaries up where Postgres says they are.

At the end of each step the analysis reads the predictors' per-version error ratio and p99 latency of the
canary's version (and its live quality against production's, when both series exist). A failed check rolls
back at once; Prometheus not answering pauses the canary (no blind promotion, no blind rollback). A canary's
steps, interval, approval and thresholds default to the model policy's ``canary`` block, then the settings.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from mlops_common.contracts import CanaryPolicy, duration_seconds
from mlops_common.names import PRODUCTION_ALIAS, Tag
from registry_proxy import audit, policies, shadows, split
from registry_proxy.context import AppContext
from registry_proxy.db import CanaryRow, Decision
from registry_proxy.errors import Conflict, NotFound, ServiceError
from registry_proxy.governance import Governance, Unit
from registry_proxy.metrics import ROLLBACKS
from registry_proxy.mlflow_registry import failed_validation
from registry_proxy.prometheus import Prometheus, PrometheusUnavailable, label
from registry_proxy.schemas import CanaryStart, ShadowStart

log = logging.getLogger(__name__)

CANARY_ALIAS = "canary"
CANARY_ACTOR = "canary"
ACTIVE = split.CANARY_ACTIVE
DEFAULT_STEPS = (5, 25, 50, 100)
DEFAULT_INTERVAL = "2m"


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


@dataclass(frozen=True)
class Thresholds:
    max_error_ratio: float
    max_p99_seconds: float
    max_quality_drop: float

    def as_dict(self) -> dict[str, float]:
        return {"max_error_ratio": self.max_error_ratio, "max_p99_seconds": self.max_p99_seconds,
                "max_quality_drop": self.max_quality_drop}


class Analysis:
    """The checks of one step, read from Prometheus.

    Error ratio and p99 come from the predictor's per-version series of the canary's version
    (``predictor_model_requests_total`` and ``predictor_model_request_duration_seconds_bucket`` with
    ``model_name`` and ``model_version``); where no such series exists, from the model's HTTP series (a predictor
    that does not label by version; that selector also matches series without a ``model_name``). Live quality
    is compared per version only: accuracy for classifiers, MAE (relative) for regressors."""

    PREDICT_HANDLERS = 'handler=~"/predict|/invocations|/models/.+"'
    FAILED = 'status=~"5..|error"'

    def __init__(self, url: str, timeout: float) -> None:
        self.prometheus = Prometheus(url, timeout)

    def value(self, query: str) -> float | None:
        return self.prometheus.value(query)

    @staticmethod
    def version_selector(model: str, version: str) -> str:
        return f'model_name="{label(model)}",model_version="{label(version)}"'

    @staticmethod
    def model_selector(model: str) -> str:
        return f'model_name=~"{label(re.escape(model))}|"'

    def _first(self, name: str, threshold: float, queries: list[tuple[str, str]]) -> dict[str, Any]:
        for scope, query in queries:
            value = self.value(query)
            if value is not None:
                return {"name": name, "value": value, "threshold": threshold, "passed": value <= threshold,
                        "scope": scope, "query": query}
        return {"name": name, "value": None, "threshold": threshold, "passed": True, "scope": "none",
                "query": queries[0][1]}

    def run(self, model: str, version: str, production: str | None, window_seconds: float,
            thresholds: Thresholds) -> list[dict[str, Any]]:
        w = f"{max(1, round(window_seconds))}s"
        v, m = self.version_selector(model, version), self.model_selector(model)
        errors = [
            ("version", f"(sum(rate(predictor_model_requests_total{{{v},{self.FAILED}}}[{w}])) or on() vector(0)) "
                        f"/ sum(rate(predictor_model_requests_total{{{v}}}[{w}]))"),
            ("model", f'(sum(rate(predictor_http_requests_total{{{m},status=~"5.."}}[{w}])) or on() vector(0)) '
                      f"/ sum(rate(predictor_http_requests_total{{{m}}}[{w}]))"),
        ]
        latency = [
            ("version", f"histogram_quantile(0.99, sum by (le) (rate("
                        f"predictor_model_request_duration_seconds_bucket{{{v}}}[{w}])))"),
            ("model", f"histogram_quantile(0.99, sum by (le) (rate("
                      f"predictor_http_request_duration_seconds_bucket{{{m},{self.PREDICT_HANDLERS}}}[{w}])))"),
        ]
        checks = [self._first("error_ratio", thresholds.max_error_ratio, errors),
                  self._first("p99_seconds", thresholds.max_p99_seconds, latency)]
        if production is not None:
            checks.append(self._quality(model, version, production, thresholds.max_quality_drop))
        return checks

    def _quality(self, model: str, version: str, production: str, max_drop: float) -> dict[str, Any]:
        def live(series: str, v: str) -> str:
            return f"max({series}{{{self.version_selector(model, v)}}})"

        accuracy = "predictor_version_live_accuracy"
        mae = "predictor_version_live_mae"
        # Accuracy: production's minus the canary's. MAE: how much larger the canary's is, relative to production's.
        for metric, query in (
                ("accuracy", f"{live(accuracy, production)} - {live(accuracy, version)}"),
                ("mae", f"({live(mae, version)} - {live(mae, production)}) / {live(mae, production)}")):
            drop = self.value(query)
            if drop is not None:
                return {"name": "quality_drop", "value": drop, "threshold": max_drop, "passed": drop <= max_drop,
                        "scope": "version", "metric": metric, "query": query}
        return {"name": "quality_drop", "value": None, "threshold": max_drop, "passed": True, "scope": "none",
                "query": f"{live(accuracy, production)} - {live(accuracy, version)}"}


def canary_view(row: CanaryRow) -> dict[str, Any]:
    return {
        "id": row.id, "model_name": row.model_name, "version": row.version,
        "production_version": row.production_version, "status": row.status, "steps": list(row.steps),
        "step_index": row.step_index, "weight": row.weight if row.status in ACTIVE else 0,
        "interval": row.interval, "interval_seconds": row.interval_seconds,
        "require_approval": row.require_approval, "thresholds": dict(row.thresholds), "checks": list(row.checks),
        "reason": row.reason, "started_by": row.started_by, "started_at": _iso(row.started_at),
        "updated_at": _iso(row.updated_at), "next_check_at": _iso(row.next_check_at),
        "finished_at": _iso(row.finished_at), "finished_by": row.finished_by,
    }


class Rollouts:
    """The canary operations; every change runs in the model's governance unit (lock, audit, events, undo)."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.registry = ctx.registry
        self.governance = Governance(ctx)
        self.analysis = Analysis(ctx.settings.prometheus_url, ctx.settings.prometheus_timeout_seconds)

    # -- reads ----------------------------------------------------------------------------------------

    def latest(self, model: str) -> dict[str, Any]:
        with self.ctx.sessions() as session:
            row = session.scalars(select(CanaryRow).where(CanaryRow.model_name == model)
                                  .order_by(CanaryRow.id.desc()).limit(1)).first()
        if row is None:
            self.registry.get_model(model)
            raise NotFound(f"model {model!r} has had no canary")
        return canary_view(row)

    def rollout(self, model: str) -> dict[str, Any]:
        production = self.registry.aliases(model).get(PRODUCTION_ALIAS)
        with self.ctx.sessions() as session:
            row = split.active_canary(session, model)
            now = split.current(session, model)
        return {"model_name": model, "production": production, **split.as_dict(now),
                "status": row.status if row is not None else None}

    @staticmethod
    def _active(session: Any, model: str, lock: bool = False) -> CanaryRow | None:
        return split.active_canary(session, model, lock)

    # -- changes asked for by people ------------------------------------------------------------------

    def start(self, model: str, req: CanaryStart, actor: str) -> dict[str, Any]:
        mv = self.registry.get_version(model, req.version)
        settings = self.ctx.settings
        with self.governance.unit(model) as unit:
            session = unit.session
            policy = (policies.rollout_policy(session, model) or None)
            defaults = (policy.canary if policy is not None else None) or CanaryPolicy()

            def pick(name: str, fallback: Any) -> Any:
                for value in (getattr(req, name), getattr(defaults, name)):
                    if value is not None:
                        return value
                return fallback

            thresholds = Thresholds(max_error_ratio=pick("max_error_ratio", settings.canary_max_error_ratio),
                                    max_p99_seconds=pick("max_p99_seconds", settings.canary_max_p99_seconds),
                                    max_quality_drop=pick("max_quality_drop", settings.canary_max_quality_drop))
            steps: list[int] = list(pick("steps", DEFAULT_STEPS))
            interval: str = pick("interval", DEFAULT_INTERVAL)
            interval_seconds = duration_seconds(interval)
            require_approval: bool = pick("require_approval", False)
            aliases = self.registry.aliases(model)
            why = failed_validation(mv)
            if why:
                raise Conflict(f"cannot start a canary: {why}")
            production = aliases.get(PRODUCTION_ALIAS)
            if production == req.version:
                raise Conflict(f"version {req.version} of {model!r} is already in production")
            if production is None:
                raise Conflict(f"model {model!r} has no production version to share traffic with: promote one first")
            active = self._active(session, model)
            if active is not None:
                raise Conflict(f"canary {active.id} of {model!r} (version {active.version}) is {active.status}: "
                               f"abort it first")
            pending = session.scalars(select(Decision).where(Decision.model_name == model,
                                                             Decision.version == req.version,
                                                             Decision.status == "pending")).first()
            if pending is not None:
                raise Conflict(f"version {req.version} awaits decision {pending.id}: decide it first")
            shadows.require(self.ctx, session, model, req.version, mv.tags, "start a canary")
            now = _now()
            row = CanaryRow(model_name=model, version=req.version, production_version=production, status="running",
                            steps=steps, step_index=0, weight=steps[0], interval=interval,
                            interval_seconds=interval_seconds, require_approval=require_approval,
                            thresholds=thresholds.as_dict(), checks=[], started_by=actor, started_at=now,
                            updated_at=now, next_check_at=now + timedelta(seconds=interval_seconds))
            session.add(row)
            session.flush()
            if aliases.get(CANARY_ALIAS) != req.version:
                self.governance.set_alias(unit, model, CANARY_ALIAS, req.version, aliases.get(CANARY_ALIAS))
            audit.record(session, actor=actor, action="canary.start", model=model, from_version=production,
                         to_version=req.version, reason=req.reason,
                         details={"canary_id": row.id, "steps": row.steps, "interval": row.interval,
                                  "require_approval": row.require_approval, "thresholds": row.thresholds})
            self.governance.notify(unit, "canary_started", model, version=req.version, from_version=production,
                                   reason=req.reason, actor=actor, steps=row.steps, interval=row.interval)
            split.write(self.ctx, unit, model)
            view = canary_view(row)
        return view

    def _locked_active(self, unit: Unit, model: str) -> CanaryRow:
        row = self._active(unit.session, model, lock=True)
        if row is None:
            self.registry.get_model(model)
            raise Conflict(f"model {model!r} has no canary under way")
        return row

    def pause(self, model: str, reason: str, actor: str) -> dict[str, Any]:
        with self.governance.unit(model) as unit:
            row = self._locked_active(unit, model)
            if row.status != "running":
                raise Conflict(f"canary {row.id} of {model!r} is {row.status}, not running")
            self._pause(unit, row, reason or f"paused by {actor}", actor)
            view = canary_view(row)
        return view

    def resume(self, model: str, reason: str, actor: str) -> dict[str, Any]:
        with self.governance.unit(model) as unit:
            row = self._locked_active(unit, model)
            if row.status != "paused":
                raise Conflict(f"canary {row.id} of {model!r} is {row.status}, not paused")
            row.status, row.reason, row.updated_at = "running", None, _now()
            # The step that was interrupted is watched for a whole interval again.
            row.next_check_at = row.updated_at + timedelta(seconds=row.interval_seconds)
            audit.record(unit.session, actor=actor, action="canary.resume", model=model, to_version=row.version,
                         reason=reason, details={"canary_id": row.id, "step": row.step_index, "weight": row.weight})
            split.write(self.ctx, unit, model)
            view = canary_view(row)
        return view

    def abort(self, model: str, reason: str, actor: str) -> dict[str, Any]:
        with self.governance.unit(model) as unit:
            row = self._locked_active(unit, model)
            self._end(unit, row, "rolled_back", reason or f"aborted by {actor}", actor)
            audit.record(unit.session, actor=actor, action="canary.abort", model=model, from_version=row.version,
                         to_version=row.production_version, reason=row.reason,
                         details={"canary_id": row.id, "step": row.step_index})
            self.governance.notify(unit, "canary_aborted", model, version=row.production_version,
                                   from_version=row.version, reason=row.reason, actor=actor)
            view = canary_view(row)
        return view

    def approve(self, model: str, reason: str, actor: str) -> dict[str, Any]:
        with self.governance.unit(model) as unit:
            row = self._locked_active(unit, model)
            if row.status != "awaiting_approval":
                raise Conflict(f"canary {row.id} of {model!r} is {row.status}, not awaiting approval")
            self._promote(unit, row, actor, reason or f"canary {row.id} approved by {actor}")
            view = canary_view(row)
        return view

    # -- shadow periods -------------------------------------------------------------------------------

    def shadow(self, model: str) -> dict[str, Any]:
        """The model's latest shadow period with the evidence the predictors reported over it, and what the
        policy still asks for. Prometheus down leaves ``evidence`` null with ``evidence_error`` saying why."""
        with self.ctx.sessions() as session:
            row = shadows.latest(session, model)
            policy = policies.rollout_policy(session, model)
        if row is None:
            self.registry.get_model(model)
            raise NotFound(f"model {model!r} never had a shadow")
        view: dict[str, Any] = {**shadows.shadow_view(row), "evidence": None, "evidence_error": None,
                                "policy": None, "missing": None}
        try:
            view["evidence"] = shadows.evidence(shadows.prometheus(self.ctx), row)
        except PrometheusUnavailable as exc:
            view["evidence_error"] = str(exc)
        if policy is not None and policy.shadow is not None:
            view["policy"] = policy.shadow.model_dump()
            if view["evidence"] is not None:
                view["missing"] = shadows.gaps(policy.shadow, view["evidence"])
        return view

    def start_shadow(self, model: str, req: ShadowStart, actor: str) -> dict[str, Any]:
        mv = self.registry.get_version(model, req.version)
        with self.governance.unit(model) as unit:
            why = failed_validation(mv)
            if why:
                raise Conflict(f"cannot start a shadow: {why}")
            production = self.registry.aliases(model).get(PRODUCTION_ALIAS)
            if production == req.version:
                raise Conflict(f"version {req.version} of {model!r} is in production: there is nothing to compare")
            if production is None:
                raise Conflict(f"model {model!r} has no production version to mirror: promote one first")
            running = split.running_shadow(unit.session, model, lock=True)
            if running is not None:
                raise Conflict(f"version {running.version} of {model!r} is in shadow since "
                               f"{_iso(running.started_at)}: stop it first with DELETE /models/{model}/shadow")
            row = shadows.begin(self.ctx, unit, model, req.version, req.share, production, actor, req.reason)
            view = shadows.shadow_view(row)
        return view

    def stop_shadow(self, model: str, reason: str, actor: str) -> dict[str, Any]:
        with self.governance.unit(model) as unit:
            row = split.running_shadow(unit.session, model, lock=True)
            if row is None:
                self.registry.get_model(model)
                raise Conflict(f"model {model!r} has no shadow running")
            shadows.end(self.ctx, unit, row, "stopped", actor, reason or f"stopped by {actor}")
            view = shadows.shadow_view(row)
        return view

    # -- what the loop does ---------------------------------------------------------------------------

    def due(self) -> list[tuple[int, str]]:
        with self.ctx.sessions() as session:
            rows = session.execute(select(CanaryRow.id, CanaryRow.model_name)
                                   .where(CanaryRow.status == "running", CanaryRow.next_check_at <= _now())
                                   .order_by(CanaryRow.next_check_at)).all()
        return [(row_id, model) for row_id, model in rows]

    def advance(self, canary_id: int, model: str) -> str | None:
        """Analyses the canary's current step if it is still due; returns its status afterwards (None when
        another replica had it)."""
        with self.governance.unit(model) as unit:
            row = unit.session.scalars(
                select(CanaryRow).where(CanaryRow.id == canary_id, CanaryRow.status == "running",
                                        CanaryRow.next_check_at <= _now())
                .with_for_update(skip_locked=True)).first()
            if row is None:
                return None
            thresholds = Thresholds(**row.thresholds)
            window = max(row.interval_seconds, self.ctx.settings.canary_min_window_seconds)
            try:
                checks = self.analysis.run(model, row.version, row.production_version, window, thresholds)
            except PrometheusUnavailable as exc:
                self._pause(unit, row, f"analysis impossible: {exc}", CANARY_ACTOR)
                return row.status
            passed = all(c["passed"] for c in checks)
            row.checks = [*row.checks, {"step": row.step_index, "weight": row.weight, "time": _now().isoformat(),
                                        "passed": passed, "checks": checks}]
            row.updated_at = _now()
            if not passed:
                self._rollback(unit, row, checks)
            elif row.step_index + 1 < len(row.steps):
                row.step_index += 1
                row.weight = row.steps[row.step_index]
                row.next_check_at = row.updated_at + timedelta(seconds=row.interval_seconds)
                log.info("canary %s of %s: step %d passed, now %d%%", row.id, model, row.step_index, row.weight)
            elif row.require_approval:
                row.status, row.next_check_at = "awaiting_approval", None
                row.reason = "every step passed: waiting for an approver (POST .../canary/approve)"
                audit.record(unit.session, actor=CANARY_ACTOR, on_behalf_of=row.started_by, action="canary.passed",
                             model=model, from_version=row.production_version, to_version=row.version,
                             reason=row.reason, details={"canary_id": row.id})
                self.governance.notify(unit, "canary_awaiting_approval", model, version=row.version,
                                       from_version=row.production_version, reason=row.reason, actor=CANARY_ACTOR)
            else:
                self._promote(unit, row, CANARY_ACTOR, f"canary {row.id} passed every step ({row.steps})",
                              on_behalf_of=row.started_by)
            split.write(self.ctx, unit, model)
            return row.status

    # -- endings --------------------------------------------------------------------------------------

    def _pause(self, unit: Unit, row: CanaryRow, reason: str, actor: str) -> None:
        row.status, row.reason, row.updated_at, row.next_check_at = "paused", reason, _now(), None
        audit.record(unit.session, actor=actor, action="canary.pause", model=row.model_name, to_version=row.version,
                     reason=reason, details={"canary_id": row.id, "step": row.step_index, "weight": row.weight})
        self.governance.notify(unit, "canary_paused", row.model_name, version=row.version,
                               from_version=row.production_version, reason=reason, actor=actor)
        split.write(self.ctx, unit, row.model_name)

    def _end(self, unit: Unit, row: CanaryRow, status: str, reason: str, actor: str) -> None:
        now = _now()
        row.status, row.reason, row.updated_at, row.next_check_at = status, reason, now, None
        row.finished_at, row.finished_by = now, actor
        aliases = self.registry.aliases(row.model_name)
        if aliases.get(CANARY_ALIAS) == row.version:
            self.governance.delete_alias(unit, row.model_name, CANARY_ALIAS, row.version)
        split.write(self.ctx, unit, row.model_name)

    def _rollback(self, unit: Unit, row: CanaryRow, checks: list[dict[str, Any]]) -> None:
        failed = [c for c in checks if not c["passed"]]
        reason = "canary check failed: " + "; ".join(
            f"{c['name']} {c['value']:.4g} > {c['threshold']:.4g} ({c['scope']})" for c in failed)
        self._end(unit, row, "rolled_back", reason, CANARY_ACTOR)
        self.registry.set_tags(row.model_name, row.version, {Tag.ROLLED_BACK_AT: _now().isoformat()})
        # A rollback row: DORA counts it as a failed change restored after (rollback - canary start).
        audit.record(unit.session, actor=CANARY_ACTOR, on_behalf_of=row.started_by, action="rollback",
                     model=row.model_name, from_version=row.version, to_version=row.production_version,
                     reason=reason, metrics={c["name"]: c["value"] for c in checks},
                     details={"via": "canary", "canary_id": row.id, "step": row.step_index, "weight": row.weight,
                              "canary_started_at": _iso(row.started_at), "checks": checks})
        unit.after_commit.append(ROLLBACKS.labels(model_name=row.model_name).inc)
        self.governance.notify(unit, "rollback", row.model_name, version=row.production_version,
                               from_version=row.version, reason=reason, actor=CANARY_ACTOR)
        log.warning("canary %s of %s rolled back: %s", row.id, row.model_name, reason)

    def _promote(self, unit: Unit, row: CanaryRow, actor: str, reason: str, on_behalf_of: str | None = None) -> None:
        aliases = self.registry.aliases(row.model_name)
        self.governance.move_production(unit, row.model_name, row.version, actor=actor, on_behalf_of=on_behalf_of,
                                        reason=reason, via="canary", aliases=aliases,
                                        details={"canary_id": row.id, "steps": row.steps,
                                                 "started_by": row.started_by})
        self._end(unit, row, "promoted", reason, actor)
        row.weight = 100


class CanaryLoop:
    """Advances due canaries every ``canary_tick_seconds``, in a daemon thread of this process."""

    def __init__(self, ctx: AppContext) -> None:
        self.rollouts = Rollouts(ctx)
        self.tick_seconds = ctx.settings.canary_tick_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="canary-loop", daemon=True)

    def start(self) -> CanaryLoop:
        if self.tick_seconds > 0:
            self._thread.start()
        return self

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def tick(self) -> int:
        advanced = 0
        for canary_id, model in self.rollouts.due():
            if self._stop.is_set():
                break
            try:
                if self.rollouts.advance(canary_id, model) is not None:
                    advanced += 1
            except ServiceError as exc:
                log.warning("canary %s of %s not advanced now: %s", canary_id, model, exc.detail)
            except Exception:
                log.exception("canary %s of %s not advanced now", canary_id, model)
        return advanced

    def _run(self) -> None:
        while not self._stop.wait(self.tick_seconds):
            try:
                self.tick()
            except Exception:
                log.exception("canary loop: looking for due canaries failed")
