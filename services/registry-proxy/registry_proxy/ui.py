"""The server-rendered page for the human in the loop: models, versions, aliases, each model's rollout (the
canary with its steps and checks, the shadow with its live evidence) with Pause / Resume / Abort / Approve
buttons, a Promote button per non-production version and Roll back when a ``previous`` alias exists, the shown
versions' run metrics side by side with each version's confusion matrix or residual plot (from its MLflow run)
and a bar chart of the gate metric, pending decisions with Approve / Reject buttons, and the audit log,
filterable by model and action. Plain HTML and a little vanilla JS (an inline SVG, no chart library); no build
step. Every button sends the token in the ``Authorization`` header."""

from __future__ import annotations

import math
from html import escape
from typing import Any
from urllib.parse import quote

from mlflow.entities.model_registry import RegisteredModel
from sqlalchemy import select

from mlops_common.errors import ServiceError
from mlops_common.names import PREVIOUS_ALIAS, Tag
from registry_proxy import audit, policies, shadows, split
from registry_proxy.context import AppContext
from registry_proxy.db import AuditEntry, CanaryRow, ShadowRow
from registry_proxy.governance import Governance
from registry_proxy.prometheus import PrometheusUnavailable
from registry_proxy.rollouts import canary_view
from registry_proxy.views import model_summary

MAX_MODELS = 50
# Versions shown per model; also the bound on MLflow run reads per model (one per shown version).
MAX_VERSIONS = 10
# Metrics compared per model: a run logging hundreds of metrics must not make the table unreadable.
MAX_METRICS = 20
# Actions offered in the audit filter's suggestions.
MAX_ACTIONS = 50
AUDIT_ROWS = 25
MISSING = "-"
CHART_HEIGHT = 80
CHART_BAR = 36
CHART_GAP = 12
# Display width of a version's plot in the comparison (the trainer's figures are a few hundred pixels wide).
PLOT_WIDTH = 240

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222;max-width:72rem}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2rem}
table{border-collapse:collapse;width:100%;margin:.5rem 0}
th,td{border-bottom:1px solid #ddd;padding:.3rem .5rem;text-align:left;vertical-align:top;font-size:.9rem}
th{background:#f5f5f5}.alias{display:inline-block;padding:0 .4rem;border-radius:.6rem;font-size:.8rem;
background:#e8eefc;margin-right:.2rem}.alias-production{background:#c8f0c8}.alias-previous{background:#eee}
.banner{background:#fff3cd;padding:.5rem;border:1px solid #e0c870}.rollout{margin:.3rem 0 .8rem 1rem}
.passed{color:#070}.failed{color:#a00}#status{min-height:1.2rem;color:#a00}
button{margin-right:.3rem}code{font-size:.8rem}
.compare{width:auto;min-width:20rem}.compare td,.compare th{text-align:right}
.compare td:first-child,.compare th:first-child{text-align:left}.compare img.plot{height:auto;max-width:100%}
.chart{margin:.5rem 0;font-size:.8rem;color:#555}.gate-chart{display:block}
.gate-chart rect{fill:#6b8fd6}.gate-chart text{font-size:10px;fill:#333}
#audit-filter input{width:12rem}
"""

SCRIPT = """
const base = location.pathname.replace(/\\/ui\\/?$/, '');
function token() {
  const field = document.getElementById('token');
  let value = field.value || sessionStorage.getItem('registryToken') || '';
  if (!value) { value = window.prompt('Your API token (role approver or admin)') || ''; }
  if (value) { sessionStorage.setItem('registryToken', value); field.value = value; }
  return value;
}
async function decide(id, action) {
  const status = document.getElementById('status');
  const bearer = token();
  if (!bearer) { status.textContent = 'A token is needed to ' + action + '.'; return; }
  const comment = document.getElementById('comment-' + id).value;
  status.textContent = action + ' decision ' + id + '…';
  const response = await fetch(base + '/decisions/' + id + '/' + action, {
    method: 'POST',
    headers: {'Authorization': 'Bearer ' + bearer, 'Content-Type': 'application/json'},
    body: JSON.stringify({comment: comment}),
  });
  if (response.ok) { location.reload(); return; }
  let detail = response.statusText;
  try { detail = (await response.json()).detail; } catch (e) {}
  if (response.status === 401) { sessionStorage.removeItem('registryToken'); }
  status.textContent = 'Could not ' + action + ' decision ' + id + ': ' + response.status + ' ' + detail;
}
async function rollout(model, path, method, what, extra) {
  const status = document.getElementById('status');
  const bearer = token();
  if (!bearer) { status.textContent = 'A token is needed to ' + what + '.'; return; }
  status.textContent = what + ' (' + model + ')…';
  const response = await fetch(base + '/models/' + encodeURIComponent(model) + path, {
    method: method,
    headers: {'Authorization': 'Bearer ' + bearer, 'Content-Type': 'application/json'},
    body: JSON.stringify(Object.assign({reason: 'from the registry page'}, extra || {})),
  });
  if (response.ok) { location.reload(); return; }
  let detail = response.statusText;
  try { detail = (await response.json()).detail; } catch (e) {}
  if (typeof detail !== 'string') { detail = JSON.stringify(detail); }
  if (response.status === 401) { sessionStorage.removeItem('registryToken'); }
  status.textContent = 'Could not ' + what + ' (' + model + '): ' + response.status + ' ' + detail;
}
document.addEventListener('click', (event) => {
  const button = event.target.closest('button[data-decision]');
  if (button) { decide(button.dataset.decision, button.dataset.action); return; }
  const canary = event.target.closest('button[data-canary]');
  if (canary) {
    rollout(canary.dataset.model, '/canary/' + canary.dataset.canary, 'POST', canary.dataset.canary);
    return;
  }
  const shadow = event.target.closest('button[data-shadow-stop]');
  if (shadow) { rollout(shadow.dataset.model, '/shadow', 'DELETE', 'stop the shadow'); return; }
  const promote = event.target.closest('button[data-promote]');
  if (promote) {
    const version = promote.dataset.promote;
    rollout(promote.dataset.model, '/promote', 'POST', 'promote v' + version, {version: version});
    return;
  }
  const back = event.target.closest('button[data-rollback]');
  if (back) { rollout(back.dataset.model, '/rollback', 'POST', 'roll back to v' + back.dataset.rollback); }
});
// A version whose run holds no plot (404) shows "-" like a missing metric rather than a broken image.
document.addEventListener('error', (event) => {
  const img = event.target;
  if (img instanceof HTMLImageElement && img.classList.contains('plot')) { img.replaceWith('-'); }
}, true);
window.addEventListener('DOMContentLoaded', () => {
  document.getElementById('token').value = sessionStorage.getItem('registryToken') || '';
});
"""


def _e(value: Any) -> str:
    return "" if value is None else escape(str(value))


def _score(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


def _aliases(names: list[str]) -> str:
    return "".join(f'<span class="alias alias-{_e(a)}">{_e(a)}</span>' for a in names)


CANARY_BUTTONS = {"running": ("pause", "abort"), "paused": ("resume", "abort"),
                  "awaiting_approval": ("approve", "abort")}


def _checks(step: dict[str, Any]) -> str:
    parts = []
    for c in step.get("checks", []):
        value = "no data" if c.get("value") is None else f"{c['value']:.4g}"
        parts.append(f'{_e(c["name"])} {_e(value)} ≤ {_score(c.get("threshold"))} ({_e(c.get("scope"))})')
    return "; ".join(parts)


def _canary_block(model: str, row: CanaryRow | None) -> str:
    if row is None:
        return ""
    view = canary_view(row)
    buttons = "".join(f'<button data-canary="{a}" data-model="{_e(model)}">{a.capitalize()}</button>'
                      for a in CANARY_BUTTONS.get(view["status"], ()))
    done = {c["step"]: c for c in view["checks"]}
    steps = []
    for i, weight in enumerate(view["steps"]):
        step = done.get(i)
        if step is not None:
            mark = "passed" if step["passed"] else "failed"
            steps.append(f'<li class="step {mark}">{weight}%: {mark} — {_checks(step)}</li>')
        else:
            now = " (now)" if i == view["step_index"] and view["status"] in CANARY_BUTTONS else ""
            steps.append(f'<li class="step">{weight}%{now}</li>')
    return (f'<div class="rollout canary" data-status="{_e(view["status"])}">'
            f'<strong>Canary</strong> v{_e(view["version"])}: '
            f'<span class="canary-status">{_e(view["status"])}</span>, '
            f'<span class="canary-weight">{view["weight"]}</span>% of traffic, every {_e(view["interval"])}'
            f'{" — " + _e(view["reason"]) if view["reason"] else ""} {buttons}<ol>{"".join(steps)}</ol></div>')


def _shadow_block(ctx: AppContext, model: str, row: ShadowRow | None) -> str:
    if row is None:
        return ""
    try:
        found: dict[str, Any] | None = shadows.evidence(shadows.prometheus(ctx), row)
        problem = ""
    except PrometheusUnavailable as exc:
        found, problem = None, f'<span class="banner">evidence unavailable: {_e(exc)}</span>'
    facts = ""
    if found is not None:
        agreement = "—" if found["agreement"] is None else f"{found['agreement']:.1%}"
        per_class = ", ".join(f"{_e(k)} {v:.1%}" for k, v in found["agreement_per_class"].items())
        quality = found["live_quality"]
        live = (f"; live {_e(quality['metric'])}: shadow {_score(quality['shadow'])} vs production "
                f"{_score(quality['production'])}" if quality else "")
        facts = (f'<span class="shadow-evidence">{found["compared"]} compared, agreement '
                 f'<span class="agreement">{agreement}</span>{" (" + per_class + ")" if per_class else ""}, '
                 f"p50 {_score(found['p50_seconds'])} s, p99 {_score(found['p99_seconds'])} s, "
                 f"{found['errors']} errors, {found['shed']} shed{live}</span>")
    button = (f'<button data-shadow-stop="1" data-model="{_e(model)}">Stop shadow</button>'
              if row.status == "running" else "")
    return (f'<div class="rollout shadow"><strong>Shadow</strong> v{_e(row.version)}: {_e(row.status)}, '
            f"{row.share}% of requests mirrored since {_e(str(row.started_at)[:19])} {facts}{problem} {button}</div>")


def _rollout_blocks(ctx: AppContext, model: str) -> str:
    with ctx.sessions() as session:
        canary = session.scalars(select(CanaryRow).where(CanaryRow.model_name == model)
                                 .order_by(CanaryRow.id.desc()).limit(1)).first()
        shadow = split.running_shadow(session, model)
    return _canary_block(model, canary) + _shadow_block(ctx, model, shadow)


def _run_metrics(ctx: AppContext, run_ids: list[str]) -> dict[str, dict[str, float] | None]:
    """Each run's metrics, read once per distinct run; None for a run that is gone or that MLflow would not
    give (the page shows "-" for it instead of failing)."""
    found: dict[str, dict[str, float] | None] = {}
    for run_id in run_ids:
        if run_id in found:
            continue
        try:
            metrics, _ = ctx.registry.run_info(run_id)
        except ServiceError:
            found[run_id] = None
            continue
        found[run_id] = metrics or None
    return found


def _value(metrics: dict[str, float] | None, name: str) -> float | None:
    value = (metrics or {}).get(name)
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _shown(value: float | None) -> str:
    return MISSING if value is None else f"{value:.4g}"


def _gate_metric(ctx: AppContext, model: str) -> str | None:
    """The metric the model's gate policy compares versions on (None before its first gate)."""
    with ctx.sessions() as session:
        row = policies.current_row(session, model)
    return row.metric if row is not None else None


def _plot_cell(model: str, version: str, has_run: bool) -> str:
    """The version's confusion matrix or residual plot, served by GET /ui/plots/... A relative URL, so it
    resolves under whatever path prefix the page itself was served from; loaded lazily, one MLflow download
    per image actually scrolled into view. A failed load is replaced by "-" (SCRIPT)."""
    if not has_run:
        return f'<td data-version="{_e(version)}">{MISSING}</td>'
    src = f"ui/plots/{quote(model, safe='')}/versions/{quote(version, safe='')}"
    return (f'<td data-version="{_e(version)}"><img class="plot" loading="lazy" src="{_e(src)}" '
            f'alt="v{_e(version)} confusion matrix or residual plot" width="{PLOT_WIDTH}"></td>')


def _comparison(model: str, versions: list[str], metrics: list[dict[str, float] | None],
                gate_metric: str | None, has_run: list[bool]) -> str:
    """The shown versions' run metrics side by side: one row per metric, one column per version, and a last
    row with each version's evaluation plot (what the trainer logged in its run)."""
    names = sorted({name for m in metrics for name in (m or {})})
    if gate_metric in names:
        names.remove(gate_metric)
        names.insert(0, gate_metric)
    names = names[:MAX_METRICS]
    if not names and not any(has_run):
        return f'<p class="compare-empty" data-model="{_e(model)}">No run metrics to compare.</p>'
    head = "".join(f'<th data-version="{_e(v)}">v{_e(v)}</th>' for v in versions)
    rows = []
    for name in names:
        cells = "".join(f'<td data-version="{_e(v)}">{_e(_shown(_value(m, name)))}</td>'
                        for v, m in zip(versions, metrics, strict=True))
        mark = ' class="gate-metric"' if name == gate_metric else ""
        rows.append(f'<tr data-metric="{_e(name)}"{mark}><td>{_e(name)}</td>{cells}</tr>')
    plots = "".join(_plot_cell(model, v, run) for v, run in zip(versions, has_run, strict=True))
    rows.append(f'<tr class="plots"><td>plot</td>{plots}</tr>')
    return (f'<table class="compare" data-model="{_e(model)}"><tr><th>metric</th>{head}</tr>'
            + "".join(rows) + "</table>")


def _chart(model: str, metric: str | None, versions: list[str], metrics: list[dict[str, float] | None]) -> str:
    """An inline SVG bar chart of the gate metric, oldest version on the left; a version without the value
    gets "-" and no bar. Bars scale from 0 to the largest value shown."""
    if metric is None:
        return ""
    points = [(v, _value(m, metric)) for v, m in reversed(list(zip(versions, metrics, strict=True)))]
    if all(value is None for _, value in points):
        return ""
    top = max((value for _, value in points if value is not None and value > 0), default=1.0)
    width = len(points) * (CHART_BAR + CHART_GAP) + CHART_GAP
    height = CHART_HEIGHT + 30
    parts = []
    for i, (version, value) in enumerate(points):
        x = CHART_GAP + i * (CHART_BAR + CHART_GAP)
        bar = 0.0 if value is None else CHART_HEIGHT * max(value, 0.0) / top
        y = 14 + CHART_HEIGHT - bar
        if value is not None:
            parts.append(f'<rect data-version="{_e(version)}" x="{x}" y="{y:.1f}" width="{CHART_BAR}" '
                         f'height="{bar:.1f}"><title>v{_e(version)}: {_e(_shown(value))}</title></rect>')
        parts.append(f'<text x="{x + CHART_BAR / 2}" y="{y - 3:.1f}" text-anchor="middle">'
                     f"{_e(_shown(value))}</text>")
        parts.append(f'<text x="{x + CHART_BAR / 2}" y="{height - 4}" text-anchor="middle">v{_e(version)}</text>')
    return (f'<figure class="chart"><figcaption>gate metric {_e(metric)} by version</figcaption>'
            f'<svg class="gate-chart" data-model="{_e(model)}" data-metric="{_e(metric)}" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="{_e(metric)} by version of {_e(model)}">' + "".join(parts) + "</svg></figure>")


def _model_block(ctx: AppContext, model: RegisteredModel) -> str:
    summary = model_summary(model)
    aliases = summary["aliases"]
    production = summary["production_version"]
    versions = ctx.registry.versions(model.name)[:MAX_VERSIONS]
    numbers = [str(mv.version) for mv in versions]
    read = _run_metrics(ctx, [mv.run_id for mv in versions if mv.run_id])
    metrics = [read.get(mv.run_id) if mv.run_id else None for mv in versions]
    rows = []
    for mv, version in zip(versions, numbers, strict=True):
        held = sorted(a for a, v in aliases.items() if v == version)
        tags = mv.tags or {}
        button = ("" if version == production else
                  f'<button data-promote="{_e(version)}" data-model="{_e(model.name)}">Promote</button>')
        rows.append(
            f'<tr data-version="{_e(version)}"><td>v{_e(version)}</td><td>{_aliases(held)}</td>'
            f"<td>{_e(tags.get(Tag.GATE_OUTCOME, ''))}</td>"
            f"<td>{_e(tags.get(Tag.GATE_CHALLENGER_SCORE, ''))}</td>"
            f"<td><code>{_e((mv.run_id or '')[:12])}</code></td><td>{button}</td></tr>")
    previous = aliases.get(PREVIOUS_ALIAS)
    rollback = (f' <button data-rollback="{_e(previous)}" data-model="{_e(model.name)}">Roll back to '
                f"v{_e(previous)}</button>" if previous else "")
    gate_metric = _gate_metric(ctx, model.name)
    return (f'<section id="model-{_e(model.name)}" class="model" data-model="{_e(model.name)}">'
            f"<h3>{_e(model.name)} — production: "
            f'<span class="production-version">{_e(production) if production else "none"}</span>{rollback}</h3>'
            + _rollout_blocks(ctx, model.name) +
            "<table><tr><th>version</th><th>aliases</th><th>gate</th><th>score</th><th>run</th><th></th></tr>"
            + "".join(rows) + "</table>"
            + _chart(model.name, gate_metric, numbers, metrics)
            + _comparison(model.name, numbers, metrics, gate_metric, [bool(mv.run_id) for mv in versions])
            + "</section>")


def _models_section(ctx: AppContext) -> tuple[str, list[str]]:
    """The models' blocks, the most recently changed first (at most MAX_MODELS), and the names listed (the audit
    filter suggests them)."""
    try:
        models = sorted(ctx.registry.list_models(), key=lambda m: m.last_updated_timestamp or 0,
                        reverse=True)[:MAX_MODELS]
        parts = []
        for model in models:
            try:
                parts.append(_model_block(ctx, model))
            except ServiceError as exc:
                parts.append(f'<section class="model" data-model="{_e(model.name)}"><h3>{_e(model.name)}</h3>'
                             f'<p class="banner">{_e(exc.detail)}</p></section>')
        return "".join(parts) or "<p>No registered models yet.</p>", [m.name for m in models]
    except ServiceError as exc:
        return f'<p class="banner">{_e(exc.detail)}</p>', []


def _decisions_section(ctx: AppContext, decisions: list[dict[str, Any]]) -> str:
    if not decisions:
        return '<p id="no-pending">No pending decisions.</p>'
    rows = []
    for d in decisions:
        metric = d["metric"]
        direction = "higher is better" if metric["higher_is_better"] else "lower is better"
        run_link = f'<a href="{_e(d["links"]["run"])}">run</a>' if "run" in d["links"] else ""
        golden = (d.get("evidence") or {}).get("golden") or {}
        golden_cell = (f'<td class="golden">{_score((golden.get("challenger") or {}).get(metric["name"]))} vs '
                       f'{_score((golden.get("production") or {}).get(metric["name"]))}</td>' if golden
                       else '<td class="golden">—</td>')
        rows.append(
            f'<tr id="decision-{d["id"]}" class="decision"><td>#{d["id"]}</td><td>{_e(d["model_name"])}</td>'
            f'<td>v{_e(d["version"])}</td>'
            f'<td>{_e(metric["name"])} ({direction}); threshold {_score(metric["threshold"])}</td>'
            f'<td>{_score(d["challenger_score"])}</td>'
            f'<td>{_score(d["production_score"])} (v{_e(d["production_version"] or "—")})</td>'
            + golden_cell +
            f'<td><code>{_e((d["dataset_digest"] or "")[:19])}</code> {run_link}</td>'
            f'<td>{_e(d["reason"])}</td>'
            f'<td><input id="comment-{d["id"]}" placeholder="comment" size="12">'
            f'<button data-decision="{d["id"]}" data-action="approve">Approve</button>'
            f'<button data-decision="{d["id"]}" data-action="reject">Reject</button></td></tr>')
    return ("<table><tr><th>id</th><th>model</th><th>version</th><th>metric</th><th>challenger</th>"
            "<th>production</th><th>golden set: challenger vs production</th><th>data / run</th><th>why</th>"
            "<th></th></tr>" + "".join(rows) + "</table>")


def _audit_section(rows: list[dict[str, Any]]) -> str:
    body = "".join(
        f'<tr class="audit" data-model="{_e(r["model_name"])}" data-action="{_e(r["action"])}">'
        f'<td>{_e(r["time"][:19].replace("T", " "))}</td><td>{_e(r["actor"])}'
        f'{" for " + _e(r["on_behalf_of"]) if r.get("on_behalf_of") else ""}</td>'
        f'<td>{_e(r["action"])}</td><td>{_e(r["model_name"])}</td>'
        f'<td>{_e(r["from_version"] or "—")} → {_e(r["to_version"] or "—")}</td><td>{_e(r["reason"])}</td></tr>'
        for r in rows)
    empty = '<p id="no-audit">No audit entries match.</p>' if not rows else ""
    return ('<table id="audit"><tr><th>time (UTC)</th><th>who</th><th>action</th><th>model</th><th>versions</th>'
            "<th>why</th></tr>" + body + "</table>" + empty)


def _audit_actions(ctx: AppContext) -> list[str]:
    with ctx.sessions() as session:
        return list(session.scalars(select(AuditEntry.action).distinct().order_by(AuditEntry.action)
                                    .limit(MAX_ACTIONS)))


def _audit_filter(model: str | None, action: str | None, models: list[str], actions: list[str]) -> str:
    """A GET form back to this page: the filters live in the URL, so a filtered view can be shared."""
    model_options = "".join(f'<option value="{_e(m)}">' for m in models)
    action_options = "".join(f'<option value="{_e(a)}">' for a in actions)
    clear = ' <a id="audit-clear" href="?">show all</a>' if model or action else ""
    return ('<form id="audit-filter" method="get">'
            f'<label>model <input id="audit-model" name="model" list="audit-models" value="{_e(model)}"></label> '
            f'<label>action <input id="audit-action" name="action" list="audit-actions" value="{_e(action)}">'
            f'</label> <button type="submit">Filter</button>{clear}'
            f'<datalist id="audit-models">{model_options}</datalist>'
            f'<datalist id="audit-actions">{action_options}</datalist></form>')


def render_page(ctx: AppContext, model: str | None = None, action: str | None = None) -> str:
    """The whole page; ``model`` and ``action`` narrow the audit table (empty means all)."""
    model, action = model or None, action or None
    pending = Governance(ctx).decisions(status="pending", limit=100)
    audit_rows = audit.listing(ctx.sessions, model=model, action=action, limit=AUDIT_ROWS, offset=0,
                               before_id=None)["items"]
    models_html, model_names = _models_section(ctx)
    narrowed = " — " + ", ".join(f"{k} {_e(v)}" for k, v in (("model", model), ("action", action)) if v)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>registry-proxy</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>
<body>
<h1>Model registry</h1>
<p><label>API token <input id="token" type="password" autocomplete="off"></label>
<span id="status" role="status"></span></p>
<h2>Pending decisions</h2>
{_decisions_section(ctx, pending)}
<h2>Models</h2>
{models_html}
<h2>Recent audit log{narrowed if model or action else ""}</h2>
{_audit_filter(model, action, model_names, _audit_actions(ctx))}
{_audit_section(audit_rows)}
<script>{SCRIPT}</script>
</body></html>"""


def sign_in_page(reason: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>registry-proxy: sign in</title><style>{STYLE}</style></head>
<body><h1>Model registry</h1><p class="banner" id="reason">{_e(reason)}</p>
<form id="sign-in"><label>API token <input id="token" type="password" autocomplete="off" required></label>
<button type="submit">Sign in</button></form>
<script>
document.getElementById('sign-in').addEventListener('submit', (event) => {{
  event.preventDefault();
  const value = document.getElementById('token').value;
  sessionStorage.setItem('registryToken', value);
  document.cookie = 'registry_token=' + encodeURIComponent(value) + '; path=/ui; SameSite=Strict';
  location.reload();
}});
</script></body></html>"""
