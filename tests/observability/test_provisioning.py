"""Static checks of the provisioning files against Grafana's documented format, and promtool on the
Prometheus configuration and rules. No services needed."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.observability import provisioning as prov
from tests.support.scripts import load_script

DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
UID = re.compile(r"^[a-zA-Z0-9_-]{1,40}$")
VARIABLE = re.compile(r"\$(\w+)")
GRAFANA_BUILD = load_script("infra/grafana/build.py", "grafana_build")
BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__range"}


def test_generated_files_are_current() -> None:
    stale = [str(path.relative_to(prov.REPO)) for path, content in GRAFANA_BUILD.render().items()
             if not path.exists() or path.read_text() != content]
    assert not stale, f"run `python infra/grafana/build.py` and commit: {stale}"


def test_datasource_has_fixed_uid() -> None:
    doc = prov.load_yaml(prov.PROVISIONING / "datasources/prometheus.yaml")
    assert doc["apiVersion"] == 1
    (source,) = doc["datasources"]
    assert source["uid"] == prov.DATASOURCE_UID and source["type"] == "prometheus" and source["url"]


def test_dashboard_provider_points_at_the_json_files() -> None:
    doc = prov.load_yaml(prov.DASHBOARDS_DIR / "dashboards.yaml")
    assert doc["apiVersion"] == 1
    (provider,) = doc["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]
    assert sorted(p.name for p in prov.DASHBOARDS_DIR.glob("*.json")) == [
        "dora.json", "model-quality.json", "serving.json", "training-lifecycle.json"]


def test_dashboards_are_well_formed() -> None:
    boards = prov.dashboards().values()
    assert len({b["uid"] for b in boards}) == len(boards), "dashboard uids must be unique"
    for board in boards:
        assert UID.match(board["uid"]) and board["title"] and board["schemaVersion"]
        variables = {v["name"] for v in board["templating"]["list"]}
        for var in board["templating"]["list"]:
            assert var["datasource"]["uid"] == prov.DATASOURCE_UID
        panels = prov.panels(board)
        assert panels and len({p["id"] for p in panels}) == len(panels)
        for panel in panels:
            where = f"{board['uid']} / {panel['title']}"
            assert panel["datasource"]["uid"] == prov.DATASOURCE_UID, where
            assert set(panel["gridPos"]) == {"h", "w", "x", "y"}, where
            assert panel["targets"], where
            assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"]), where
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == prov.DATASOURCE_UID, where
                assert target["expr"].strip(), where
                unknown = set(VARIABLE.findall(target["expr"])) - variables - BUILTIN_VARIABLES
                assert not unknown, f"{where}: undefined variables {unknown}"


def test_dashboards_cover_the_issue() -> None:
    titles = {b["uid"]: " | ".join(p["title"] for p in prov.panels(b)) for b in prov.dashboards().values()}
    for uid, words in {
        "mlops-serving": ["Requests", "5xx", "p50 / p95 / p99 by model version", "Batch size", "reloads",
                          "Served model version"],
        "mlops-quality": ["Live accuracy", "Live MAE", "Predicted classes", "Predicted values", "Drift per feature",
                          "Overall drift"],
        "mlops-training": ["Jobs by outcome", "Job duration", "Queue depth", "Candidates' scores", "Promotions",
                           "Pending decisions"],
        "mlops-dora": ["Deployment frequency", "Lead time", "Change failure rate", "Time to restore"],
    }.items():
        for word in words:
            assert word in titles[uid], f"{uid} has no panel about {word!r}"


def test_alert_rules_follow_grafana_provisioning_format() -> None:
    doc = prov.load_yaml(prov.ALERTING_DIR / "rules.yaml")
    assert doc["apiVersion"] == 1
    boards = {b["uid"]: {p["id"] for p in prov.panels(b)} for b in prov.dashboards().values()}
    uids, titles = [], []
    for group in doc["groups"]:
        assert group["orgId"] == 1 and group["name"] and group["folder"] and DURATION.match(group["interval"])
        for rule in group["rules"]:
            uids.append(rule["uid"])
            titles.append(rule["title"])
            assert UID.match(rule["uid"]), rule["uid"]
            assert DURATION.match(rule["for"]), rule["for"]
            assert rule["noDataState"] in {"Alerting", "NoData", "OK"}
            assert rule["execErrState"] in {"Alerting", "Error", "OK"}
            assert rule["annotations"]["summary"] and rule["annotations"]["runbook"]
            assert rule["labels"]["severity"] in {"critical", "warning"}
            assert rule["panelId"] in boards[rule["dashboardUid"]], f"{rule['uid']} links to a missing panel"
            data = {d["refId"]: d for d in rule["data"]}
            assert rule["condition"] in data
            for ref, item in data.items():
                assert item["model"]["refId"] == ref
                assert {"from", "to"} <= set(item["relativeTimeRange"])
                if item["datasourceUid"] == "__expr__":
                    assert item["model"]["type"] in {"reduce", "threshold", "math", "classic_conditions"}
                    assert item["model"]["expression"] in data, f"{rule['uid']}/{ref} refers to a missing refId"
                else:
                    assert item["datasourceUid"] == prov.DATASOURCE_UID, rule["uid"]
                    assert item["model"]["expr"].strip()
            condition = data[rule["condition"]]["model"]
            assert condition["type"] == "threshold"
            assert data[condition["expression"]]["model"]["type"] == "reduce"
    assert len(set(uids)) == len(uids) and len(set(titles)) == len(titles)
    assert set(uids) == {"predictor-down", "predictor-error-ratio", "predictor-latency-p99", "model-drift",
                         "live-quality-low", "retrain-job-failed", "decision-pending", "no-production-model"}


def test_model_alerts_keep_the_model_name_label() -> None:
    for rule in prov.alert_rules():
        if rule.uid != "predictor-down":
            assert "model_name)" in rule.expr, f"{rule.uid} would drop model_name"
    retrain = {r.uid for r in prov.alert_rules() if r.labels.get("retrain") == "true"}
    assert retrain == {"model-drift", "live-quality-low"}


def _receivers(policy: dict, labels: dict[str, str]) -> list[str]:
    """Where a notification with ``labels`` goes: matching child routes in order (``continue`` goes on),
    else the policy's own receiver."""
    found = []
    for route in policy.get("routes", []):
        if all(labels.get(name) == value for name, op, value in route.get("object_matchers", [])
               if op == "="):
            found.append(route["receiver"])
            if not route.get("continue"):
                break
    return found or [policy["receiver"]]


def test_contact_points_and_policy_route_retraining_alerts_to_trainer() -> None:
    points = prov.load_yaml(prov.ALERTING_DIR / "contact-points.yaml")
    policies = prov.load_yaml(prov.ALERTING_DIR / "policies.yaml")
    assert points["apiVersion"] == 1 and policies["apiVersion"] == 1
    names = {p["name"] for p in points["contactPoints"]}
    receivers = {p["name"]: r for p in points["contactPoints"] for r in p["receivers"]}
    assert len({r["uid"] for r in receivers.values()}) == len(receivers)
    trainer = receivers["trainer-api"]
    assert trainer["type"] == "webhook"
    assert trainer["settings"]["url"] == "${TRAINER_ALERT_WEBHOOK_URL}"
    assert trainer["settings"]["authorization_scheme"] == "Bearer"
    assert trainer["settings"]["authorization_credentials"] == "${TRAINER_API_TOKEN}"
    (policy,) = policies["policies"]
    assert policy["receiver"] in names and "model_name" in policy["group_by"]
    for route in [policy, *policy["routes"]]:
        assert route["receiver"] in names
        for key in ("group_wait", "group_interval", "repeat_interval"):
            assert key not in route or DURATION.match(route[key])
    for rule in prov.alert_rules():
        routed = _receivers(policy, {"alertname": rule.title, **rule.labels})
        if rule.labels["retrain"] == "true":
            assert routed == ["trainer-api", "operators"], rule.uid
        else:
            assert routed == ["operators"], rule.uid


def test_prometheus_rules_mirror_grafana_alerts() -> None:
    rules = {r["labels"]["grafana_uid"]: r for r in
             prov.load_yaml(prov.PROMETHEUS_DIR / "rules/mlops-alerts.yml")["groups"][0]["rules"]}
    for alert in prov.alert_rules():
        op = ">" if alert.op == "gt" else "<"
        assert rules[alert.uid]["expr"] == f"({alert.expr}) {op} {alert.threshold:g}"
        assert rules[alert.uid]["for"] == alert.for_


def test_every_prometheus_config_scrapes_the_same_jobs() -> None:
    """The alerts select on job names, so the compose, dev and host-network configs must agree."""
    configs = [prov.PROMETHEUS_DIR / "prometheus.yml", prov.PROMETHEUS_DIR / "prometheus.dev.yml",
               *sorted((prov.REPO / "docker/prometheus").glob("*.yml"))]
    jobs = {path.name: sorted(j["job_name"] for j in prov.load_yaml(path)["scrape_configs"]) for path in configs}
    assert len({tuple(j) for j in jobs.values()}) == 1, jobs
    assert jobs["prometheus.yml"] == ["mlflow", "predictor", "prometheus", "registry-proxy", "trainer-api"]


def test_prometheus_logs_in_to_mlflow() -> None:
    """MLflow's auth app guards /metrics too: the stack's configs scrape it as MLflow's read-only user
    `prometheus`, with the password file secrets-init writes into Prometheus' volume (docker-compose.yml)."""
    for path in (prov.PROMETHEUS_DIR / "prometheus.yml", prov.REPO / "docker/prometheus/prometheus.hostnet.yml"):
        (job,) = [j for j in prov.load_yaml(path)["scrape_configs"] if j["job_name"] == "mlflow"]
        assert job["basic_auth"] == {"username": "prometheus",
                                     "password_file": "/run/secrets/mlops/mlflow_password_prometheus"}, path
        others = [j for j in prov.load_yaml(path)["scrape_configs"] if j["job_name"] != "mlflow"]
        assert not any("basic_auth" in j for j in others), path


@pytest.mark.skipif(prov.PROMTOOL is None, reason=prov.NO_PROMETHEUS)
@pytest.mark.parametrize("args", [
    ["check", "config", "infra/prometheus/prometheus.yml"],
    ["check", "config", "infra/prometheus/prometheus.dev.yml"],
    ["check", "rules", "infra/prometheus/rules/mlops-alerts.yml"],
    ["test", "rules", "infra/prometheus/tests/mlops-alerts.test.yml"],
], ids=["config", "dev-config", "rules", "rule-unit-tests"])
def test_promtool(args: list[str]) -> None:
    result = subprocess.run([prov.PROMTOOL, *args], cwd=prov.REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
