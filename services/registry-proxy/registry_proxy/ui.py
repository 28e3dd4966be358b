"""The server-rendered page for the human in the loop: models, versions, aliases, each model's rollout (the
canary with its steps and checks, the shadow with its live evidence) with Pause / Resume / Abort / Approve
buttons, pending decisions with Approve / Reject buttons, and the recent audit log. Plain HTML and a little
vanilla JS; no build step. Every button sends the token in the ``Authorization`` header."""

from __future__ import annotations

from html import escape
from typing import Any

from sqlalchemy import select

from mlops_common.errors import ServiceError
from mlops_common.names import Tag
from registry_proxy import audit, shadows, split
from registry_proxy.context import AppContext
from registry_proxy.db import CanaryRow, ShadowRow
from registry_proxy.governance import Governance
from registry_proxy.prometheus import PrometheusUnavailable
from registry_proxy.rollouts import canary_view
from registry_proxy.views import model_summary

MAX_MODELS = 50
MAX_VERSIONS = 10

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
async function rollout(model, path, method, what) {
  const status = document.getElementById('status');
  const bearer = token();
  if (!bearer) { status.textContent = 'A token is needed to ' + what + '.'; return; }
  status.textContent = what + ' (' + model + ')…';
  const response = await fetch(base + '/models/' + encodeURIComponent(model) + path, {
    method: method,
    headers: {'Authorization': 'Bearer ' + bearer, 'Content-Type': 'application/json'},
    body: JSON.stringify({reason: 'from the registry page'}),
  });
  if (response.ok) { location.reload(); return; }
  let detail = response.statusText;
  try { detail = (await response.json()).detail; } catch (e) {}
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
  if (shadow) { rollout(shadow.dataset.model, '/shadow', 'DELETE', 'stop the shadow'); }
});
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


def _models_section(ctx: AppContext) -> str:
    try:
        models = ctx.registry.list_models()[:MAX_MODELS]
        parts = []
        for model in models:
            summary = model_summary(model)
            aliases = summary["aliases"]
            rows = []
            for mv in ctx.registry.versions(model.name)[:MAX_VERSIONS]:
                version = str(mv.version)
                held = sorted(a for a, v in aliases.items() if v == version)
                tags = mv.tags or {}
                rows.append(
                    f'<tr data-version="{_e(version)}"><td>v{_e(version)}</td><td>{_aliases(held)}</td>'
                    f"<td>{_e(tags.get(Tag.GATE_OUTCOME, ''))}</td>"
                    f"<td>{_e(tags.get(Tag.GATE_CHALLENGER_SCORE, ''))}</td>"
                    f"<td><code>{_e((mv.run_id or '')[:12])}</code></td></tr>")
            production = summary["production_version"]
            parts.append(
                f'<section id="model-{_e(model.name)}" class="model" data-model="{_e(model.name)}">'
                f"<h3>{_e(model.name)} — production: "
                f'<span class="production-version">{_e(production) if production else "none"}</span></h3>'
                + _rollout_blocks(ctx, model.name) +
                "<table><tr><th>version</th><th>aliases</th><th>gate</th><th>score</th><th>run</th></tr>"
                + "".join(rows) + "</table></section>")
        return "".join(parts) or "<p>No registered models yet.</p>"
    except ServiceError as exc:
        return f'<p class="banner">{_e(exc.detail)}</p>'


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
        f'<tr class="audit"><td>{_e(r["time"][:19].replace("T", " "))}</td><td>{_e(r["actor"])}'
        f'{" for " + _e(r["on_behalf_of"]) if r.get("on_behalf_of") else ""}</td>'
        f'<td>{_e(r["action"])}</td><td>{_e(r["model_name"])}</td>'
        f'<td>{_e(r["from_version"] or "—")} → {_e(r["to_version"] or "—")}</td><td>{_e(r["reason"])}</td></tr>'
        for r in rows)
    return ("<table><tr><th>time (UTC)</th><th>who</th><th>action</th><th>model</th><th>versions</th>"
            "<th>why</th></tr>" + body + "</table>")


def render_page(ctx: AppContext) -> str:
    pending = Governance(ctx).decisions(status="pending", limit=100)
    audit_rows = audit.listing(ctx.sessions, model=None, action=None, limit=25, offset=0, before_id=None)["items"]
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
{_models_section(ctx)}
<h2>Recent audit log</h2>
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
