"""Dashboards and alerts as code: the one place where every panel's and every alert's PromQL is written.

``python infra/grafana/build.py`` writes
  infra/grafana/provisioning/dashboards/*.json      the four Grafana dashboards,
  infra/grafana/provisioning/alerting/rules.yaml    the Grafana-managed alert rules,
  infra/prometheus/rules/mlops-alerts.yml           the same alerts as Prometheus rules (for Alertmanager).
tests/observability checks that the committed files are what this script writes, then runs every query
against a real Prometheus. Grafana variables used here: ``$model_name`` (multi-value, "All" = ``.*``) and
``$__rate_interval``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS_DIR = ROOT / "infra/grafana/provisioning/dashboards"
ALERT_RULES_FILE = ROOT / "infra/grafana/provisioning/alerting/rules.yaml"
PROMETHEUS_RULES_FILE = ROOT / "infra/prometheus/rules/mlops-alerts.yml"

DATASOURCE_UID = "prometheus"
DATASOURCE = {"type": "prometheus", "uid": DATASOURCE_UID}
ALERT_FOLDER = "MLOps"
RUNBOOK = "infra/README.md#alerts"
# Latency SLO of /predict and /invocations: 99 % of requests under 500 ms (a bucket boundary of the
# instrumentator's labelled histogram, so the alert is exact, not interpolated).
LATENCY_SLO_SECONDS = 0.5
ERROR_RATIO_SLO = 0.01

M = 'model_name=~"$model_name"'
# HTTP metrics carry no model label: join them to the model each predictor instance serves.
BY_MODEL = "* on (instance) group_left (model_name) group by (instance, model_name) (predictor_model_loaded%s)"
SERVED = "group by (instance, model_name, model_version) (predictor_model_info{%s} == 1)"
PREDICT_HANDLERS = 'handler=~"/predict|/invocations"'
RI = "[$__rate_interval]"


# --- alerts ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Alert:
    uid: str
    title: str
    expr: str
    op: str  # "gt" | "lt": the threshold expression's evaluator
    threshold: float
    for_: str
    summary: str
    runbook: str
    severity: str = "warning"
    no_data: str = "OK"
    retrain: bool = False
    dashboard: str = ""
    panel: str = ""  # the title of the dashboard panel that shows the alert's series

    @property
    def promql_condition(self) -> str:
        return f"({self.expr}) {'>' if self.op == 'gt' else '<'} {self.threshold:g}"


# A predictor that is gone from service discovery (a compose replica removed) has no `up` series at all:
# absent() turns that into a 0 too.
PREDICTOR_UP = 'up{job="predictor"} or on () (absent(up{job="predictor"}) - 1)'
ERROR_RATIO = (
    '(sum by (instance) (rate(predictor_http_requests_total{status=~"5.."}[5m]))'
    " or sum by (instance) (rate(predictor_http_requests_total[5m])) * 0)"
    " / sum by (instance) (rate(predictor_http_requests_total[5m]))"
)
P99_PREDICT = (
    "histogram_quantile(0.99, sum by (instance, le) "
    f"(rate(predictor_http_request_duration_seconds_bucket{{{PREDICT_HANDLERS}}}[5m])))"
)
DRIFT_RATIO = (
    'max by (model_name) (predictor_drift_score{feature="overall"})'
    " / on (model_name) max by (model_name) (predictor_drift_threshold)"
)
QUALITY_SHORTFALL = (
    "(max by (model_name) (predictor_quality_threshold)"
    " - on (model_name) min by (model_name) (predictor_live_accuracy))"
    " or (max by (model_name) (predictor_live_mae) - on (model_name) max by (model_name) (predictor_quality_threshold))"
)
FAILED = 'trainer_jobs_total{status="failed"}'
# increase() misses the first failure of a model (its series starts at 1), so a series that did not
# exist 15 minutes ago counts with its whole value.
FAILED_RECENTLY = (
    f"sum by (model_name) ({FAILED} unless {FAILED} offset 15m)"
    f" or sum by (model_name) (increase({FAILED}[15m]))"
)
NO_PRODUCTION = (
    "min by (model_name) (registry_production_version)"
    " or max by (model_name) (predictor_model_loaded)"
)

ALERTS = [
    Alert("predictor-down", "Predictor down", PREDICTOR_UP, "lt", 1, "1m",
          "{{ if $labels.instance }}Prometheus cannot scrape predictor {{ $labels.instance }}."
          "{{ else }}Prometheus finds no predictor to scrape.{{ end }}",
          "Check the predictor container/process and its log; /health must answer 200. Clients get "
          "connection errors until it is back.", severity="critical", no_data="Alerting", dashboard="mlops-serving",
          panel="Scrape targets up"),
    Alert("predictor-error-ratio", "Predictor 5xx ratio above 1%", ERROR_RATIO + " " + BY_MODEL % "", "gt",
          ERROR_RATIO_SLO, "5m",
          "More than 1% of requests to {{ $labels.instance }} ({{ $labels.model_name }}) fail with 5xx.",
          "Open the Serving dashboard: 503 with 'no production model' means nothing is promoted (see the "
          "registry); other 5xx: read the predictor log for the request ids.",
          severity="critical", dashboard="mlops-serving", panel="5xx ratio"),
    Alert("predictor-latency-p99", "Predictor p99 latency above SLO", P99_PREDICT + " " + BY_MODEL % "", "gt",
          LATENCY_SLO_SECONDS, "5m",
          "p99 of /predict and /invocations on {{ $labels.instance }} is above 500 ms.",
          "Check CPU saturation, batch sizes and a recent model swap on the Serving dashboard; scale predictor "
          "replicas or roll back a slower model version.", dashboard="mlops-serving",
          panel="p99 of /predict and /invocations vs SLO"),
    Alert("model-drift", "Input drift above the spec's threshold", DRIFT_RATIO, "gt", 1, "10m",
          "Overall drift of {{ $labels.model_name }} is above its threshold (score/threshold > 1).",
          "Look at drift per feature on the Model quality dashboard. The alert asks trainer-api to retrain on "
          "fresh data (label retrain=true); check the retrain job and the gate's decision.",
          retrain=True, dashboard="mlops-quality", panel="Drift / threshold (alert series)"),
    Alert("live-quality-low", "Live quality below the threshold", QUALITY_SHORTFALL, "gt", 0, "10m",
          "Live accuracy/MAE of {{ $labels.model_name }} from feedback is worse than the spec's threshold.",
          "Confirm the feedback is right (Model quality dashboard); the alert asks trainer-api to retrain; "
          "if the new version is not better, roll back or approve a candidate by hand.",
          retrain=True, dashboard="mlops-quality", panel="Quality shortfall (alert series)"),
    Alert("retrain-job-failed", "Retrain job failed", FAILED_RECENTLY, "gt", 0, "0s",
          "A retrain job for {{ $labels.model_name }} failed in the last 15 minutes.",
          "GET /jobs?status=failed on trainer-api shows the error (bad data, missing column, MLflow down); "
          "fix the input and POST /retrain again.", dashboard="mlops-training", panel="Jobs by outcome"),
    Alert("decision-pending", "Promotion decision pending for a human",
          "max by (model_name) (registry_pending_decisions)", "gt", 0, "1m",
          "{{ $labels.model_name }} has a candidate waiting for approval.",
          "Open registry-proxy /ui (or GET /decisions?status=pending), compare both metrics and approve or "
          "reject.", dashboard="mlops-training", panel="Pending decisions"),
    Alert("no-production-model", "No model in production", NO_PRODUCTION, "lt", 1, "5m",
          "{{ $labels.model_name }} has no production version; the predictor answers 503.",
          "Train one (POST /retrain) or approve the pending decision; GET /models/{name} on registry-proxy "
          "shows the versions.", severity="critical", dashboard="mlops-training",
          panel="Production version"),
]


def grafana_rule(alert: Alert) -> dict[str, Any]:
    labels = {"severity": alert.severity, "retrain": "true" if alert.retrain else "false"}
    annotations = {"summary": alert.summary, "runbook": alert.runbook, "runbook_url": RUNBOOK,
                   "value": "{{ $values.B }}"}
    return {
        "uid": alert.uid,
        "title": alert.title,
        "condition": "C",
        "data": [
            {"refId": "A", "datasourceUid": DATASOURCE_UID, "relativeTimeRange": {"from": 600, "to": 0},
             "model": {"refId": "A", "datasource": dict(DATASOURCE), "expr": alert.expr, "instant": True,
                       "range": False, "intervalMs": 1000, "maxDataPoints": 43200}},
            {"refId": "B", "datasourceUid": "__expr__", "relativeTimeRange": {"from": 0, "to": 0},
             "model": {"refId": "B", "type": "reduce", "expression": "A", "reducer": "last",
                       "settings": {"mode": "dropNN"},
                       "datasource": {"type": "__expr__", "uid": "__expr__"}}},
            {"refId": "C", "datasourceUid": "__expr__", "relativeTimeRange": {"from": 0, "to": 0},
             "model": {"refId": "C", "type": "threshold", "expression": "B",
                       "conditions": [{"evaluator": {"type": alert.op, "params": [alert.threshold]}}],
                       "datasource": {"type": "__expr__", "uid": "__expr__"}}},
        ],
        "for": alert.for_,
        "noDataState": alert.no_data,
        "execErrState": "Error",
        "labels": labels,
        "annotations": annotations,
        "isPaused": False,
        "dashboardUid": alert.dashboard,
        "panelId": panel_id(alert.dashboard, alert.panel),
    }


def panel_id(dashboard_uid: str, title: str) -> int:
    (board,) = [build() for build in DASHBOARDS.values() if build()["uid"] == dashboard_uid]
    (panel,) = [p for p in board["panels"] if p["title"] == title]
    return panel["id"]


def grafana_alerting() -> dict[str, Any]:
    groups: dict[str, list[Alert]] = {}
    for alert in ALERTS:
        group = "serving" if alert.dashboard == "mlops-serving" else (
            "model-quality" if alert.dashboard == "mlops-quality" else "lifecycle")
        groups.setdefault(group, []).append(alert)
    return {
        "apiVersion": 1,
        "groups": [{"orgId": 1, "name": name, "folder": ALERT_FOLDER, "interval": "1m",
                    "rules": [grafana_rule(a) for a in alerts]} for name, alerts in groups.items()],
    }


def prometheus_rules() -> dict[str, Any]:
    rules = []
    for alert in ALERTS:
        name = "".join(part.capitalize() for part in alert.uid.split("-"))
        rules.append({
            "alert": name,
            "expr": alert.promql_condition,
            "for": alert.for_,
            "labels": {"severity": alert.severity, "retrain": "true" if alert.retrain else "false",
                       "grafana_uid": alert.uid},
            "annotations": {"summary": alert.summary, "runbook": alert.runbook},
        })
    return {"groups": [{"name": "mlops", "rules": rules}]}


# --- dashboards -----------------------------------------------------------------------------------------

@dataclass
class Panel:
    title: str
    targets: list[tuple[str, str]]  # (expr, legend)
    kind: str = "timeseries"
    unit: str = "short"
    description: str = ""
    width: int = 12
    height: int = 8
    thresholds: list[tuple[float, str]] = field(default_factory=list)
    base_color: str = "green"


def _panel(panel: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    steps = [{"color": panel.base_color, "value": None}] + [{"color": c, "value": v} for v, c in panel.thresholds]
    body: dict[str, Any] = {
        "id": pid,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit,
                                     "thresholds": {"mode": "absolute", "steps": steps}},
                        "overrides": []},
        "options": {},
        "targets": [{"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr,
                     "legendFormat": legend, "range": panel.kind == "timeseries",
                     "instant": panel.kind != "timeseries"}
                    for i, (expr, legend) in enumerate(panel.targets)],
    }
    if panel.kind == "stat":
        body["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                           "textMode": "value_and_name", "colorMode": "background"}
    elif panel.kind == "bargauge":
        body["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                           "orientation": "horizontal", "displayMode": "gradient"}
    elif panel.kind == "timeseries":
        body["options"] = {"legend": {"displayMode": "list", "placement": "bottom"},
                           "tooltip": {"mode": "multi"}}
    return body


def dashboard(uid: str, title: str, description: str, panels: list[Panel], variable_metric: str) -> dict[str, Any]:
    laid_out, x, y, row_height = [], 0, 0, 0
    for pid, panel in enumerate(panels, start=1):
        if x + panel.width > 24:
            x, y, row_height = 0, y + row_height, 0
        laid_out.append(_panel(panel, pid, x, y))
        x, row_height = x + panel.width, max(row_height, panel.height)
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["mlops"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [{
            "name": "model_name", "label": "Model", "type": "query", "datasource": DATASOURCE,
            "query": {"query": f"label_values({variable_metric}, model_name)", "refId": "model_name"},
            "definition": f"label_values({variable_metric}, model_name)",
            "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2, "sort": 1,
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        }]},
        "annotations": {"list": []},
        "links": [{"title": "MLOps dashboards", "type": "dashboards", "tags": ["mlops"], "asDropdown": True}],
        "panels": laid_out,
    }


def serving() -> dict[str, Any]:
    by_model = BY_MODEL % f"{{{M}}}"
    served = SERVED % M
    rate = "rate(predictor_http_requests_total[$__rate_interval])"
    quantiles = [
        (f"histogram_quantile({q}, sum by (instance, le) "
         f"(rate(predictor_http_request_duration_highr_seconds_bucket[$__rate_interval]))) "
         f"* on (instance) group_left (model_name, model_version) {served}",
         f"p{int(q * 100)} {{{{model_name}}}} v{{{{model_version}}}}")
        for q in (0.5, 0.95, 0.99)
    ]
    panels = [
        Panel("Served model version", [(f"max by (model_name, model_version) ({served})",
                                        "{{model_name}} v{{model_version}}")],
              kind="stat", width=6, height=5,
              description="The version each predictor serves (predictor_model_info)."),
        Panel("Model loaded", [(f"min by (model_name) (predictor_model_loaded{{{M}}})", "{{model_name}}")],
              kind="stat", width=6, height=5, thresholds=[(1, "green")], base_color="red",
              description="1 when a production version is loaded; 0 means /predict answers 503."),
        Panel("Requests per second", [(f"sum by (model_name) (sum by (instance) ({rate}) {by_model})",
                                       "{{model_name}}")],
              kind="stat", unit="reqps", width=6, height=5,
              description="All handlers of the predictors serving the selected models."),
        Panel("5xx ratio", [(f"({ERROR_RATIO.replace('[5m]', '[$__rate_interval]')}) {by_model}",
                             "{{instance}} {{model_name}}")],
              kind="stat", unit="percentunit", width=6, height=5,
              thresholds=[(ERROR_RATIO_SLO, "red")], description="Alert above 1 % for 5 min."),
        Panel("Requests by handler and status",
              [(f"sum by (handler, status) (sum by (instance, handler, status) ({rate}) {by_model})",
                "{{handler}} {{status}}")], unit="reqps",
              description="Every endpoint but /metrics and /health."),
        Panel("Latency p50 / p95 / p99 by model version", quantiles, unit="s",
              thresholds=[(LATENCY_SLO_SECONDS, "red")],
              description="From predictor_http_request_duration_highr_seconds joined to the served version."),
        Panel("p99 of /predict and /invocations vs SLO",
              [(P99_PREDICT.replace("[5m]", "[$__rate_interval]") + " " + by_model, "{{instance}} {{model_name}}")],
              unit="s", thresholds=[(LATENCY_SLO_SECONDS, "red")],
              description="The alert's series: above 0.5 s for 5 min fires 'Predictor p99 latency above SLO'."),
        Panel("Batch size (micro-batching)", [
            ("histogram_quantile(0.5, sum by (le) (rate(predictor_batch_size_bucket[$__rate_interval])))", "p50"),
            ("histogram_quantile(0.95, sum by (le) (rate(predictor_batch_size_bucket[$__rate_interval])))", "p95"),
            (f"sum(rate(predictor_batch_size_sum{RI})) / sum(rate(predictor_batch_size_count{RI}))", "mean"),
        ], description="Rows per predict call after coalescing concurrent requests."),
        Panel("Model reloads", [(f"sum by (model_name, outcome) (predictor_model_reloads_total{{{M}}})",
                                 "{{model_name}} {{outcome}}")],
              kind="bargauge", description="Hot swaps since the predictors started; a failure kept the old model."),
        Panel("Model load time", [
            ("sum(rate(predictor_model_load_seconds_sum[1h])) / sum(rate(predictor_model_load_seconds_count[1h]))",
             "mean over 1h"),
            ("max(predictor_model_load_seconds_sum / predictor_model_load_seconds_count)", "mean since start"),
        ], unit="s", description="Download, load and warm-up of a version before the swap."),
        # Rollout: the per-version series registry-proxy's canary analysis reads (production and canary side
        # by side while a canary runs; one version otherwise).
        Panel("Requests per second by version (rollout)",
              [(f"sum by (model_name, model_version) (rate(predictor_model_requests_total{{{M}}}{RI}))",
                "{{model_name}} v{{model_version}}")], unit="reqps", width=8,
              description="predictor_model_requests_total by the version that answered: a canary's share "
                          "of traffic shows as its own line."),
        Panel("Error ratio by version (rollout)",
              [(f"(sum by (model_name, model_version) "
                f"(rate(predictor_model_requests_total{{{M},status=~\"5..\"}}{RI})) "
                f"or sum by (model_name, model_version) (rate(predictor_model_requests_total{{{M}}}{RI})) * 0) "
                f"/ sum by (model_name, model_version) (rate(predictor_model_requests_total{{{M}}}{RI}))",
                "{{model_name}} v{{model_version}}")], unit="percentunit", width=8,
              thresholds=[(ERROR_RATIO_SLO, "red")],
              description="5xx answers over all answers, per version: what the canary analysis compares."),
        Panel("p99 by version (rollout)",
              [(f"histogram_quantile(0.99, sum by (model_name, model_version, le) "
                f"(rate(predictor_model_request_duration_seconds_bucket{{{M}}}{RI})))",
                "{{model_name}} v{{model_version}}")], unit="s", width=8,
              thresholds=[(LATENCY_SLO_SECONDS, "red")],
              description="predictor_model_request_duration_seconds per version that answered."),
        Panel("Scrape targets up", [("up", "{{job}} {{instance}}")], kind="stat", width=24, height=5,
              thresholds=[(1, "green")], base_color="red", description="0 means Prometheus cannot reach that service."),
    ]
    return dashboard("mlops-serving", "MLOps / Serving",
                     "Traffic, errors, latency by served version, batching and hot reloads of the predictor.",
                     panels, "predictor_model_info")


def quality() -> dict[str, Any]:
    panels = [
        Panel("Live accuracy vs threshold", [
            (f"min by (model_name) (predictor_live_accuracy{{{M}}})", "accuracy {{model_name}}"),
            (f"max by (model_name) (predictor_quality_threshold{{{M}}}) and on (model_name) "
             f"predictor_live_accuracy{{{M}}}", "threshold {{model_name}}"),
        ], unit="percentunit", description="Accuracy over the feedback window (classification)."),
        Panel("Live MAE vs threshold", [
            (f"max by (model_name) (predictor_live_mae{{{M}}})", "MAE {{model_name}}"),
            (f"max by (model_name) (predictor_quality_threshold{{{M}}}) and on (model_name) "
             f"predictor_live_mae{{{M}}}", "threshold {{model_name}}"),
        ], description="Mean absolute error over the feedback window (regression)."),
        Panel("Live quality by version (rollout)", [
            (f"max by (model_name, model_version) (predictor_version_live_accuracy{{{M}}})",
             "accuracy {{model_name}} v{{model_version}}"),
            (f"max by (model_name, model_version) (predictor_version_live_mae{{{M}}})",
             "MAE {{model_name}} v{{model_version}}"),
        ], width=24, description="Feedback scored per version that answered (production, canary) or mirrored "
                                 "the request (shadow): both versions over the same requests."),
        Panel("Quality shortfall (alert series)", [(QUALITY_SHORTFALL.replace(
            "predictor_quality_threshold)", f"predictor_quality_threshold{{{M}}})"), "{{model_name}}")],
            description="Threshold minus accuracy, or MAE minus threshold: above 0 means worse than the bar."),
        Panel("Feedback received", [(f"sum by (model_name, outcome) (rate(predictor_feedback_total{{{M}}}{RI}))",
                                     "{{model_name}} {{outcome}}")], unit="reqps",
              description="POST /feedback by outcome; no feedback means the live quality panels go stale."),
        Panel("Predicted classes", [(f"sum by (model_name, label) (rate(predictor_predictions_total{{{M}}}{RI}))",
                                     "{{model_name}} {{label}}")], unit="short",
              description="Rows predicted per second by class; a shift here is prediction drift."),
        Panel("Predicted values (regression)", [
            (f"histogram_quantile({q}, sum by (model_name, le) (rate(predictor_prediction_value_bucket{{{M}}}{RI})))",
             f"p{int(q * 100)} {{{{model_name}}}}") for q in (0.05, 0.5, 0.95)
        ], description="5th, 50th and 95th percentile of predicted values; a shift here is prediction drift."),
        Panel("Drift per feature", [(f'max by (model_name, feature) (predictor_drift_score{{{M}, feature!="overall"}})',
                                     "{{model_name}} {{feature}}")],
              description="Jensen-Shannon (text) or PSI (tabular) between the live window and the training reference."),
        Panel("Overall drift vs threshold", [
            (f'max by (model_name) (predictor_drift_score{{{M}, feature="overall"}})', "drift {{model_name}}"),
            (f"max by (model_name) (predictor_drift_threshold{{{M}}})", "threshold {{model_name}}"),
        ], description="The largest feature score against the spec's threshold (drift.js_threshold or psi_threshold)."),
        Panel("Drift / threshold (alert series)", [(DRIFT_RATIO.replace(
            'feature="overall"', f'{M}, feature="overall"'), "{{model_name}}")], kind="stat", width=24, height=5,
            thresholds=[(1, "red")], description="Above 1 for 10 min fires the drift alert, which retrains."),
    ]
    return dashboard("mlops-quality", "MLOps / Model quality",
                     "Live quality from feedback, prediction distribution and input drift against the training "
                     "reference.",
                     panels, "predictor_model_info")


def training() -> dict[str, Any]:
    panels = [
        Panel("Jobs by outcome", [(f"sum by (model_name, status) (trainer_jobs_total{{{M}}})",
                                   "{{model_name}} {{status}}")], kind="bargauge",
              description="Finished retrain jobs since trainer-api started."),
        Panel("Jobs finished per hour", [
            (f"sum by (model_name, status) (increase(trainer_jobs_total{{{M}}}[1h]))", "{{model_name}} {{status}}"),
            (f"sum by (model_name) (increase(trainer_jobs_submitted_total{{{M}}}[1h]))", "{{model_name}} submitted"),
        ], description="Jobs finished (by outcome) and accepted over the last hour."),
        Panel("Queue depth and running jobs", [("sum(trainer_queue_depth)", "queued"),
                                               ("sum(trainer_jobs_running)", "running")],
              description="A queue that only grows means too few workers (docker compose --scale trainer-worker=N)."),
        Panel("Job duration", [
            (f"histogram_quantile({q}, sum by (le) (rate(trainer_job_duration_seconds_bucket[1h])))",
             f"p{int(q * 100)}") for q in (0.5, 0.95)
        ] + [("sum(trainer_job_duration_seconds_sum) / sum(trainer_job_duration_seconds_count)", "mean since start")],
            unit="s", description="Wall time of finished jobs, queueing excluded."),
        Panel("Candidates' scores (last job)", [(f"max by (model_name, candidate) (trainer_candidate_score{{{M}}})",
                                                 "{{model_name}} {{candidate}}")], kind="bargauge",
              description="Validation score of every candidate of the last job, in the spec's metric."),
        Panel("Gate decisions", [(f"sum by (model_name, decision) (trainer_gate_decisions_total{{{M}}})",
                                  "{{model_name}} {{decision}}")], kind="bargauge",
              description="What the gate decided: promoted, kept, or pending_approval (a human is asked)."),
        Panel("Production version", [(f"max by (model_name) (registry_production_version{{{M}}})", "{{model_name}}")],
              kind="stat", width=8, height=5, description="0 means no model in production."),
        Panel("Pending decisions", [(f"max by (model_name) (registry_pending_decisions{{{M}}})", "{{model_name}}")],
              kind="stat", width=8, height=5, thresholds=[(1, "orange")],
              description="Candidates waiting for a human in registry-proxy /ui."),
        Panel("Promotions and rollbacks", [
            (f"sum by (model_name) (registry_promotions_total{{{M}}})", "promotions {{model_name}}"),
            (f"sum by (model_name) (registry_rollbacks_total{{{M}}})"
             f" or sum by (model_name) (registry_promotions_total{{{M}}}) * 0", "rollbacks {{model_name}}"),
        ], kind="stat", width=8, height=5, description="Since registry-proxy started; rollbacks also count in DORA."),
        Panel("Alert-driven retrains", [(f"sum by (model_name, outcome) (trainer_alert_retrains_total{{{M}}})",
                                         "{{model_name}} {{outcome}}")], kind="bargauge",
              description="Webhook alerts received by trainer-api and what it did with them."),
        Panel("MLflow requests", [("sum by (status) (rate(mlflow_http_request_total[$__rate_interval]))",
                                   "{{status}}")], unit="reqps",
              description="The tracking server behind every run, registration and model load."),
    ]
    return dashboard("mlops-training", "MLOps / Training and lifecycle",
                     "Retrain jobs, candidates, the promotion gate, pending decisions and the registry.",
                     panels, "registry_production_version")


def dora() -> dict[str, Any]:
    panels = [
        Panel("Deployment frequency", [(f"max by (model_name) (registry_dora_deployment_frequency_per_day{{{M}}})",
                                        "{{model_name}}")], kind="stat", width=6, height=6, unit="short",
              description="Promotions per day."),
        Panel("Lead time for change", [(f"max by (model_name) (registry_dora_lead_time_seconds{{{M}}})",
                                        "{{model_name}}")], kind="stat", width=6, height=6, unit="s",
              description="From the retrain request to the version in production."),
        Panel("Change failure rate", [(f"max by (model_name) (registry_dora_change_failure_ratio{{{M}}})",
                                       "{{model_name}}")], kind="stat", width=6, height=6, unit="percentunit",
              thresholds=[(0.15, "orange"), (0.3, "red")], description="Rollbacks divided by promotions."),
        Panel("Time to restore", [(f"max by (model_name) (registry_dora_time_to_restore_seconds{{{M}}})",
                                   "{{model_name}}")], kind="stat", width=6, height=6, unit="s",
              description="From a degraded production to the next good promotion or rollback."),
        Panel("Deployment frequency over time", [
            (f"max by (model_name) (registry_dora_deployment_frequency_per_day{{{M}}})", "{{model_name}}")],
              description="The same figure over time: a falling line means fewer releases reach production."),
        Panel("Lead time and time to restore over time", [
            (f"max by (model_name) (registry_dora_lead_time_seconds{{{M}}})", "lead time {{model_name}}"),
            (f"max by (model_name) (registry_dora_time_to_restore_seconds{{{M}}})", "restore {{model_name}}"),
        ], unit="s", description="Medians over the DORA window (DORA_WINDOW_DAYS of registry-proxy); lower is better."),
    ]
    return dashboard("mlops-dora", "MLOps / DORA for models",
                     "Deployment frequency, lead time, change failure rate and time to restore, per model.",
                     panels, "registry_production_version")


DASHBOARDS = {"serving.json": serving, "model-quality.json": quality,
              "training-lifecycle.json": training, "dora.json": dora}
README = ROOT / "infra/README.md"
TABLES_START, TABLES_END = "<!-- generated by infra/grafana/build.py: start -->", "<!-- generated: end -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def tables() -> str:
    """The README's tables of every panel and every alert."""
    lines = ["### Panels", "", "| Dashboard | Panel | Query | How to read it |", "|---|---|---|---|"]
    for build in DASHBOARDS.values():
        board = build()
        for panel in board["panels"]:
            queries = "<br>".join(f"`{_cell(t['expr'])}`" for t in panel["targets"])
            lines.append(f"| {board['title'].split(' / ')[1]} | {panel['title']} | {queries} | "
                         f"{_cell(panel['description'])} |")
    lines += ["", "### Alerts", "",
              "| Alert (uid) | Fires when | For | Labels | What to do |", "|---|---|---|---|---|"]
    for alert in ALERTS:
        op = ">" if alert.op == "gt" else "<"
        labels = f"severity={alert.severity}, retrain={'true' if alert.retrain else 'false'}"
        lines.append(f"| {alert.title} (`{alert.uid}`) | `{_cell(alert.expr)}` {op} {alert.threshold:g} | "
                     f"{alert.for_} | {labels} | {_cell(alert.runbook)} |")
    return "\n".join(lines) + "\n"


def readme_with_tables() -> str:
    text = README.read_text() if README.exists() else f"{TABLES_START}\n{TABLES_END}\n"
    head, _, rest = text.partition(TABLES_START)
    _, _, tail = rest.partition(TABLES_END)
    return f"{head}{TABLES_START}\n{tables()}{TABLES_END}{tail}"


def render() -> dict[Path, str]:
    """Every generated file and its content."""
    header = "# Generated by infra/grafana/build.py: edit that file, then run it.\n"
    files = {DASHBOARDS_DIR / name: json.dumps(build(), indent=2) + "\n" for name, build in DASHBOARDS.items()}
    files[ALERT_RULES_FILE] = header + yaml.safe_dump(grafana_alerting(), sort_keys=False, width=120)
    files[PROMETHEUS_RULES_FILE] = header + yaml.safe_dump(prometheus_rules(), sort_keys=False, width=120)
    files[README] = readme_with_tables()
    return files


def main() -> None:
    for path, content in render().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
