"""Shadow periods: a share of a model's live requests mirrored to a candidate version, off the request path.

The predictors do the mirroring (they follow the ``shadow`` half of the ``mlops.rollout`` tag) and report
per version: requests compared with production and agreed (per class), the absolute difference for
regressors, the shadow's latency, errors and shed requests, and live quality once feedback arrives. Here a
shadow period is a row (table ``shadows``); :func:`evidence` reads what the predictors reported over that
period from Prometheus, and :func:`require` holds a promotion or a canary start back until the evidence
meets the shadow block of the model's policy (409 naming what is missing; 503 when Prometheus cannot say).

The operations take the caller's governance unit (the model's lock and transaction), so the gate can start
a shadow in the same unit as its decision, and a production move can end one.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mlops_common.contracts import ShadowPolicy
from mlops_common.names import Tag
from registry_proxy import audit, policies, split
from registry_proxy.db import ShadowRow
from registry_proxy.errors import Conflict, Unavailable
from registry_proxy.prometheus import Prometheus, PrometheusUnavailable, label

if TYPE_CHECKING:
    from registry_proxy.context import AppContext
    from registry_proxy.governance import Unit

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else _aware(value).isoformat()


def prometheus(ctx: AppContext) -> Prometheus:
    return Prometheus(ctx.settings.prometheus_url, ctx.settings.prometheus_timeout_seconds)


def shadow_view(row: ShadowRow) -> dict[str, Any]:
    return {"id": row.id, "model_name": row.model_name, "version": row.version,
            "production_version": row.production_version, "status": row.status, "share": row.share,
            "reason": row.reason, "started_by": row.started_by, "started_at": _iso(row.started_at),
            "ended_at": _iso(row.ended_at), "ended_by": row.ended_by, "end_reason": row.end_reason}


def latest(session: Session, model: str, version: str | None = None) -> ShadowRow | None:
    query = select(ShadowRow).where(ShadowRow.model_name == model)
    if version is not None:
        query = query.where(ShadowRow.version == version)
    return session.scalars(query.order_by(ShadowRow.id.desc()).limit(1)).first()


# -- evidence ---------------------------------------------------------------------------------------------


def _quality(prom: Prometheus, model: str, version: str, production: str | None,
             at: datetime | None) -> dict[str, Any] | None:
    """Live quality of both versions (accuracy for classifiers, MAE for regressors), when the shadow has one."""
    for metric, series in (("accuracy", "predictor_version_live_accuracy"), ("mae", "predictor_version_live_mae")):
        def of(v: str, series: str = series) -> float | None:
            return prom.value(f'max({series}{{model_name="{label(model)}",model_version="{label(v)}"}})', at)

        shadow = of(version)
        if shadow is not None:
            return {"metric": metric, "higher_is_better": metric == "accuracy", "shadow": shadow,
                    "production": of(production) if production else None}
    return None


def evidence(prom: Prometheus, row: ShadowRow) -> dict[str, Any]:
    """What the predictors reported about this shadow period, from its start to its end (or now)."""
    end = _aware(row.ended_at) if row.ended_at is not None else _now()
    seconds = max(0.0, (end - _aware(row.started_at)).total_seconds())
    at = end  # every query at the same instant, so that their windows agree
    w = f"{max(1, round(seconds))}s"
    sel = f'model_name="{label(row.model_name)}",model_version="{label(row.version)}"'

    def inc(series: str, by: str | None = None) -> str:
        group = f" by ({by})" if by else ""
        return f"sum{group}(increase({series}{{{sel}}}[{w}]))"

    compared = prom.value(inc("predictor_shadow_compared_total"), at) or 0.0
    agreed = prom.value(inc("predictor_shadow_agreed_total"), at) or 0.0
    diff_count = prom.value(inc("predictor_shadow_abs_difference_count"), at) or 0.0
    diff_sum = prom.value(inc("predictor_shadow_abs_difference_sum"), at) or 0.0
    regressor = diff_count > 0
    per_class: dict[str, float] = {}
    if not regressor and compared > 0:
        by_label_compared = inc("predictor_shadow_compared_total", "label")
        per_class = prom.by(f'(({inc("predictor_shadow_agreed_total", "label")}) or ({by_label_compared} * 0)) '
                            f"/ ({by_label_compared})", "label", at)
    outcomes = prom.by(inc("predictor_shadow_requests_total", "outcome"), "outcome", at)

    def latency(q: float) -> float | None:
        return prom.value(f"histogram_quantile({q}, sum by (le) (increase("
                          f"predictor_shadow_request_duration_seconds_bucket{{{sel}}}[{w}])))", at)

    return {
        "seconds": round(seconds, 1),
        "compared": round(compared),
        "agreement": (agreed / compared) if compared > 0 and not regressor else None,
        "agreement_per_class": {k: round(v, 4) for k, v in sorted(per_class.items())},
        "mean_abs_difference": (diff_sum / diff_count) if regressor else None,
        "p50_seconds": latency(0.5),
        "p99_seconds": latency(0.99),
        "requests": round(outcomes.get("ok", 0.0)),
        "errors": round(outcomes.get("error", 0.0)),
        "shed": round(outcomes.get("shed", 0.0)),
        "live_quality": _quality(prom, row.model_name, row.version, row.production_version, at),
    }


def gaps(policy: ShadowPolicy, found: dict[str, Any]) -> list[str]:
    """What the evidence still lacks against the policy's shadow block (empty when it is met)."""
    missing = []
    if found["compared"] < policy.min_requests:
        missing.append(f"shadow period: {found['compared']} of {policy.min_requests} requests")
    if found["seconds"] < policy.min_seconds:
        missing.append(f"shadow period: {found['seconds']:.0f} of {policy.min_seconds:.0f} seconds")
    agreement = found["agreement"]
    if policy.min_agreement is not None and found["mean_abs_difference"] is None:
        if agreement is None:
            missing.append(f"agreement with production: no comparisons yet (needs {policy.min_agreement})")
        elif agreement < policy.min_agreement:
            missing.append(f"agreement with production {agreement:.3f} below {policy.min_agreement}")
    quality = found["live_quality"]
    if quality is not None and quality["production"] is not None:
        shadow, production = quality["shadow"], quality["production"]
        worse = shadow < production if quality["higher_is_better"] else shadow > production
        if worse:
            missing.append(f"live {quality['metric']} {shadow:.4g} worse than production's {production:.4g}")
    return missing


def require(ctx: AppContext, session: Session, model: str, version: str, tags: dict[str, str] | None,
            what: str) -> None:
    """Refuses ``what`` (a promotion, a canary start) of a challenger whose shadow period does not meet the
    policy. A version that already served as production (it has ``mlops.promoted_at``) is not a challenger."""
    policy = policies.rollout_policy(session, model)
    if policy is None or policy.shadow is None or (tags or {}).get(Tag.PROMOTED_AT):
        return
    row = latest(session, model, version)
    if row is None:
        raise Conflict(f"cannot {what}: the policy of {model!r} requires a shadow period and version {version} "
                       f"never ran in shadow (POST /models/{model}/shadow)")
    try:
        found = evidence(prometheus(ctx), row)
    except PrometheusUnavailable as exc:
        raise Unavailable(f"cannot check the shadow period of version {version}: {exc}") from exc
    missing = gaps(policy.shadow, found)
    if missing:
        raise Conflict(f"cannot {what}: " + "; ".join(missing))


# -- changes (inside the caller's governance unit) ---------------------------------------------------------


def begin(ctx: AppContext, unit: Unit, model: str, version: str, share: int, production: str | None, actor: str,
          reason: str, on_behalf_of: str | None = None) -> ShadowRow:
    row = ShadowRow(model_name=model, version=version, production_version=production, status=split.SHADOW_RUNNING,
                    share=share, reason=reason or None, started_by=actor, started_at=_now())
    unit.session.add(row)
    unit.session.flush()
    audit.record(unit.session, actor=actor, on_behalf_of=on_behalf_of, action="shadow.start", model=model,
                 from_version=production, to_version=version, reason=reason,
                 details={"shadow_id": row.id, "share": share})
    split.write(ctx, unit, model)
    return row


def end(ctx: AppContext, unit: Unit, row: ShadowRow, status: str, actor: str, reason: str) -> None:
    row.status, row.ended_at, row.ended_by, row.end_reason = status, _now(), actor, reason or None
    audit.record(unit.session, actor=actor, action="shadow.stop", model=row.model_name,
                 from_version=row.production_version, to_version=row.version, reason=reason,
                 details={"shadow_id": row.id, "status": status})
    split.write(ctx, unit, row.model_name)
