"""Reads the Grafana provisioning and Prometheus files and pulls every PromQL query out of them."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "infra/prometheus"
PROVISIONING = REPO / "infra/grafana/provisioning"
DASHBOARDS_DIR = PROVISIONING / "dashboards"
ALERTING_DIR = PROVISIONING / "alerting"
DATASOURCE_UID = "prometheus"
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
NO_PROMETHEUS = "Debian's 'prometheus' package is not installed (apt-get install -y prometheus; .ci/run does it)"


@dataclass(frozen=True)
class Query:
    source: str  # "dashboard-uid / panel title / refId" or "alert uid"
    expr: str


@dataclass(frozen=True)
class AlertRule:
    uid: str
    title: str
    expr: str
    op: str
    threshold: float
    for_: str
    labels: dict[str, str]
    reduce_mode: str | None = None  # of Grafana's reduce step: "dropNN" drops NaN and infinities before reducing


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS_DIR.glob("*.json"))}


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard.get("panels", []):
        found.append(panel)
        found.extend(panel.get("panels", []))  # collapsed rows
    return [p for p in found if p.get("type") != "row"]


def panel_queries() -> list[Query]:
    return [Query(f"{board['uid']} / {panel['title']} / {target['refId']}", target["expr"])
            for board in dashboards().values() for panel in panels(board) for target in panel.get("targets", [])]


def alert_files() -> dict[str, dict[str, Any]]:
    return {p.name: load_yaml(p) for p in sorted(ALERTING_DIR.glob("*.yaml"))}


def alert_rules() -> list[AlertRule]:
    rules = []
    for doc in alert_files().values():
        for group in doc.get("groups", []):
            for rule in group["rules"]:
                data = {d["refId"]: d for d in rule["data"]}
                threshold = data[rule["condition"]]["model"]
                evaluator = threshold["conditions"][0]["evaluator"]
                reduce = data[threshold["expression"]]["model"]
                query = data[reduce["expression"]]["model"]
                rules.append(AlertRule(rule["uid"], rule["title"], query["expr"], evaluator["type"],
                                       float(evaluator["params"][0]), rule["for"], rule.get("labels", {}),
                                       (reduce.get("settings") or {}).get("mode")))
    return rules


def alert_queries() -> list[Query]:
    return [Query(f"alert {rule.uid}", rule.expr) for rule in alert_rules()]


def crosses(rule: AlertRule, value: float) -> bool:
    """The threshold expression of the rule applied to one reduced value."""
    return value > rule.threshold if rule.op == "gt" else value < rule.threshold


_RANGE = re.compile(r"\[(\d+)([smhd])\]")
_OFFSET = re.compile(r"offset (\d+)([smhd])")


def concrete(expr: str, model_name: str = ".*", rate_interval: str = "30s") -> str:
    """A dashboard query as Grafana would send it, with its variables filled in."""
    return (expr.replace("$model_name", model_name).replace("$__rate_interval", rate_interval)
            .replace("$__interval", "5s").replace("$__range", "5m"))


def compressed(expr: str, window: str = "20s") -> str:
    """An alert query with its time windows shortened, so a test sees it cross and come back in seconds."""
    return _OFFSET.sub(f"offset {window}", _RANGE.sub(f"[{window}]", expr))
