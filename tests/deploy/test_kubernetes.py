"""deploy/kubernetes, checked without a cluster: `kubectl kustomize` renders every overlay (and the optional KEDA
component), `kubernetes-validate --strict` accepts every object for a current Kubernetes, and the rendered
objects keep the promises of deploy/kubernetes/README.md (probes, limits, non-root, secrets only referenced,
one beat, NetworkPolicies, disruption budgets), with the settings and secret files docker-compose.yml uses.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
KUBE = REPO / "deploy" / "kubernetes"
# The newest Kubernetes whose schemas the locked kubernetes-validate bundles.
KUBERNETES_VERSION = "1.37.0"
# Custom resources have no schema in kubernetes-validate (it bundles the core API only): KEDA's objects are
# checked by the assertions below instead.
CRD_GROUPS = {"keda.sh/v1alpha1"}
OVERLAYS = {"dev": "overlays/dev", "prod": "overlays/prod"}
WORKLOADS = {"Deployment", "StatefulSet"}
HTTP_SERVICES = {"predictor": 8000, "registry-proxy": 8001, "trainer-api": 8002}
# Which secrets-init volume (docker/secrets-init/secrets_init.py VOLUMES) is each workload's Secret.
SECRET_OF = {"mlflow": "mlops-mlflow", "registry-proxy": "mlops-registry-proxy", "trainer-api": "mlops-trainer",
             "trainer-worker": "mlops-trainer", "trainer-beat": "mlops-trainer", "predictor": "mlops-predictor",
             "postgres": "mlops-postgres", "redis": "mlops-redis"}
# Variables whose value is a secret (or holds one, as a URL with a password): only ever from a file or a Secret.
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|ACCESS_KEY|REDIS_URL|DATABASE_URL|DATABASE_URI|BROKER_URL"
                         r"|RESULT_BACKEND|STORE_URI")
NO_PDB = "mlops-stack/no-pdb"


def kustomize(path: Path) -> list[dict[str, Any]]:
    out = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    if not shutil.which("kubectl"):
        pytest.skip("kubectl is not installed (it renders the kustomizations)")
    out = {name: kustomize(KUBE / path) for name, path in OVERLAYS.items()}
    # The optional component, added to each overlay as the README says (a kustomization may only name
    # folders by relative path).
    for name, path in OVERLAYS.items():
        folder = tmp_path_factory.mktemp(f"{name}-keda")
        rel = os.path.relpath(KUBE, folder)
        namespace = yaml.safe_load((KUBE / path / "kustomization.yaml").read_text())["namespace"]
        (folder / "kustomization.yaml").write_text(yaml.safe_dump({
            "namespace": namespace, "resources": [f"{rel}/{path}"], "components": [f"{rel}/components/keda"]}))
        out[f"{name}+keda"] = kustomize(folder)
    return out


def objects(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def workloads(docs: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    return (d for d in docs if d["kind"] in WORKLOADS)


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = workload["spec"]["template"]["spec"]
    return spec["containers"] + spec.get("initContainers", [])


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]


def test_every_overlay_renders_and_validates_strictly(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for name, docs in rendered.items():
        kinds = {d["kind"] for d in docs}
        assert {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy",
                "ConfigMap"} <= kinds, name
        for doc in docs:
            if doc["apiVersion"] in CRD_GROUPS:
                continue
            try:
                kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']}: {e.message} at {list(e.path)}")
    assert {d["kind"] for d in rendered["dev+keda"] if d["apiVersion"] in CRD_GROUPS} == {
        "ScaledObject", "TriggerAuthentication"}
    assert not any(d["apiVersion"] in CRD_GROUPS for d in rendered["dev"] + rendered["prod"]), "KEDA is optional"


def test_strict_validation_rejects_what_kubernetes_would() -> None:
    """The validator is not a formality: a misspelt field and a wrong type fail it."""
    deployment = next(d for d in kustomize(KUBE / "overlays/prod") if d["kind"] == "Deployment")
    misspelt = copy.deepcopy(deployment)
    misspelt["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {"path": "/", "port": 1}}
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "two"
    for doc in (misspelt, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_stack_is_all_there(rendered: dict[str, list[dict[str, Any]]]) -> None:
    services = {"mlflow", "registry-proxy", "trainer-api", "trainer-worker", "trainer-beat", "predictor"}
    assert set(objects(rendered["prod"], "Deployment")) == services
    assert set(objects(rendered["dev"], "Deployment")) == services
    assert set(objects(rendered["dev"], "StatefulSet")) == {"postgres", "redis"}
    assert not objects(rendered["prod"], "StatefulSet"), "prod: Postgres and Redis are external"
    for docs in rendered.values():
        pods = {w["metadata"]["name"]: w["spec"]["template"]["metadata"]["labels"] for w in workloads(docs)}
        for svc in objects(docs, "Service").values():
            selector = svc["spec"]["selector"]
            assert any(selector.items() <= labels.items() for labels in pods.values()), svc["metadata"]["name"]
    for name in ("dev", "prod"):
        assert set(objects(rendered[name], "Service")) >= set(HTTP_SERVICES) | {"mlflow"}


def test_every_container_has_probes_limits_and_runs_as_non_root(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for overlay, docs in rendered.items():
        for workload in workloads(docs):
            name = workload["metadata"]["name"]
            pod = workload["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True, (overlay, name)
            assert pod["securityContext"]["runAsUser"] > 0, (overlay, name)
            mounts = set()
            for c in containers(workload):
                assert c.get("readinessProbe") and c.get("livenessProbe"), (overlay, name, c["name"])
                limits, requests = c["resources"]["limits"], c["resources"]["requests"]
                assert {"cpu", "memory"} <= set(limits) and {"cpu", "memory"} <= set(requests), (overlay, name)
                sc = c["securityContext"]
                assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"], name
                assert sc["readOnlyRootFilesystem"] is True, (overlay, name)
                mounts |= {m["mountPath"] for m in c.get("volumeMounts", [])}
            if name != "redis":  # redis-server writes nothing outside /data
                assert "/tmp" in mounts, f"{name}: a writable /tmp under a read-only root"
            if name in HTTP_SERVICES:
                (c,) = workload["spec"]["template"]["spec"]["containers"]
                assert c["readinessProbe"]["httpGet"]["path"] == "/ready", name
                assert c["livenessProbe"]["httpGet"]["path"] == "/health", name
                assert c["ports"][0]["containerPort"] == HTTP_SERVICES[name]
            if name == "mlflow":
                (c,) = workload["spec"]["template"]["spec"]["containers"]
                assert c["readinessProbe"]["httpGet"]["path"] == "/health"  # MLflow's own, no login


def test_images_are_pinned_and_never_latest_in_prod(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for overlay, docs in rendered.items():
        for workload in workloads(docs):
            for c in containers(workload):
                image = c["image"]
                tag = image.rsplit("/", 1)[-1].partition(":")[2]
                assert tag and tag != "latest", (overlay, image)
                if overlay.startswith("prod"):
                    assert re.fullmatch(r"\d+\.\d+\.\d+", tag), f"prod pins a release: {image}"


def test_secrets_are_referenced_never_written(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for overlay, docs in rendered.items():
        secrets = objects(docs, "Secret")
        assert not any(s.get("data") or s.get("stringData") for s in secrets.values()), overlay
        if overlay.startswith("prod"):
            assert not secrets, "prod creates no Secret object at all"
        for cm in objects(docs, "ConfigMap").values():
            for key in cm.get("data", {}):
                assert not SECRET_NAME.search(key), (overlay, cm["metadata"]["name"], key)
        for workload in workloads(docs):
            for c in containers(workload):
                for var, value in env_of(c).items():
                    if not SECRET_NAME.search(var):
                        continue
                    if var.endswith("_FILE"):
                        assert value.startswith("/run/secrets/mlops/"), (overlay, var)
                    else:
                        assert isinstance(value, dict) and "secretKeyRef" in value, (overlay, var, value)
                for source in c.get("envFrom", []):
                    assert "secretRef" not in source  # every secret by name, so the tests above see it


def test_settings_and_secret_files_are_passed_as_compose_passes_them(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    base = compose()
    for overlay in ("dev", "prod"):
        docs = rendered[overlay]
        settings = objects(docs, "ConfigMap")["mlops-settings"]["data"]
        for var in ("MODEL_EVENTS_CHANNEL", "REDIS_KEY_PREFIX", "CELERY_QUEUE"):
            # tied to the Redis ACL secrets-init renders: `${VAR:-default}` in compose, the default here
            assert base["predictor"]["environment"].get(var, base["trainer-api"]["environment"].get(var)) \
                == f"${{{var}:-{settings[var]}}}", var
        for workload in workloads(docs):
            name = workload["metadata"]["name"]
            (c,) = workload["spec"]["template"]["spec"]["containers"]
            volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
            (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == "/run/secrets/mlops"]
            assert mount.get("readOnly") is True
            assert volumes[mount["name"]]["secret"]["secretName"] == SECRET_OF[name], (overlay, name)
            if name not in base:
                continue
            theirs = base[name].get("environment") or {}
            ours = env_of(c)
            files = {k: v for k, v in theirs.items() if k.endswith("_FILE")}
            assert {k: v for k, v in ours.items() if k.endswith("_FILE")} == files, (overlay, name)
            if "MLFLOW_TRACKING_USERNAME" in theirs:
                assert ours["MLFLOW_TRACKING_USERNAME"] == theirs["MLFLOW_TRACKING_USERNAME"], name
            if name == "mlflow":
                assert ours["MLFLOW_SERVICE_USERS"].split() == theirs["MLFLOW_SERVICE_USERS"].split()
            if name in HTTP_SERVICES or name.startswith("trainer"):
                assert c["envFrom"] == [{"configMapRef": {"name": "mlops-settings"}}], name


def test_dev_postgres_creates_the_databases_compose_creates(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """The dev overlay's init script creates the same roles and databases as compose's (the served log's
    included), each role's password from the file of the Secret that the StatefulSet names."""
    def statements(script: str) -> list[str]:
        return re.findall(r"^CREATE (?:ROLE|DATABASE) .*;$", script, re.M)

    ours = statements((REPO / "docker/postgres/init-databases.sh").read_text())
    assert "CREATE ROLE servedlog LOGIN PASSWORD :'served_log_password';" in ours
    assert "CREATE DATABASE served_log OWNER servedlog;" in ours
    for overlay in ("dev", "dev+keda"):
        docs = rendered[overlay]
        (init,) = [cm for name, cm in objects(docs, "ConfigMap").items() if name.startswith("postgres-init")]
        script = init["data"]["10-init-databases.sh"]
        assert statements(script) == ours, overlay
        (c,) = objects(docs, "StatefulSet")["postgres"]["spec"]["template"]["spec"]["containers"]
        for var in re.findall(r'"\$([A-Z_]+_PASSWORD_FILE)"', script):
            assert env_of(c)[var].startswith("/run/secrets/mlops/"), (overlay, var)
        assert env_of(c)["SERVED_LOG_DB_PASSWORD_FILE"] == "/run/secrets/mlops/served_log_db_password"


def test_exactly_one_beat(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for overlay, docs in rendered.items():
        beat = objects(docs, "Deployment")["trainer-beat"]
        assert beat["spec"]["replicas"] == 1 and beat["spec"]["strategy"] == {"type": "Recreate"}, overlay
        scaled = [d["spec"]["scaleTargetRef"]["name"] for d in docs
                  if d["kind"] in {"HorizontalPodAutoscaler", "ScaledObject"}]
        assert "trainer-beat" not in scaled, overlay


def test_autoscaling_predictor_by_hpa_and_workers_by_keda_only_when_asked(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    for overlay, docs in rendered.items():
        (hpa,) = objects(docs, "HorizontalPodAutoscaler").values()
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "predictor"}
        assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
        scaled = objects(docs, "ScaledObject")
        if "keda" not in overlay:
            assert not scaled
            continue
        (so,) = scaled.values()
        assert so["spec"]["scaleTargetRef"]["name"] == "trainer-worker"
        (trigger,) = so["spec"]["triggers"]
        queue = objects(docs, "ConfigMap")["mlops-settings"]["data"]["CELERY_QUEUE"]
        assert trigger["type"] == "redis" and trigger["metadata"]["listName"] == queue
        assert trigger["authenticationRef"]["name"] in objects(docs, "TriggerAuthentication")


def reachable_from(docs: list[dict[str, Any]], target: str) -> set[str] | None:
    """The workloads whose pods may open a connection to `target`'s pods (None: no policy, everyone)."""
    policies = [p for p in objects(docs, "NetworkPolicy").values()
                if p["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name") == target
                and "Ingress" in p["spec"]["policyTypes"]]
    if not policies:
        return None
    names = {w["metadata"]["name"]: w["spec"]["template"]["metadata"]["labels"] for w in workloads(docs)}
    allowed: set[str] = set()
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            for peer in rule["from"]:
                if "namespaceSelector" in peer:
                    continue  # other namespaces: Prometheus, KEDA (checked by label below)
                selector = peer["podSelector"]
                for name, labels in names.items():
                    ok = selector.get("matchLabels", {}).items() <= labels.items()
                    for expr in selector.get("matchExpressions", []):
                        assert expr["operator"] == "In"
                        ok = ok and labels.get(expr["key"]) in expr["values"]
                    if ok:
                        allowed.add(name)
    return allowed


def test_only_the_services_reach_mlflow_postgres_and_redis(rendered: dict[str, list[dict[str, Any]]]) -> None:
    users = {"registry-proxy", "trainer-api", "trainer-worker", "trainer-beat", "predictor"}
    for overlay, docs in rendered.items():
        assert reachable_from(docs, "mlflow") == users, overlay
        if overlay.startswith("dev"):
            # the predictors write the served log, the training workers read it; trainer-api only checks the URL
            assert reachable_from(docs, "postgres") == {"mlflow", "registry-proxy", "predictor",
                                                        "trainer-worker"}, overlay
            assert reachable_from(docs, "redis") == users, overlay
        others = [peer for p in objects(docs, "NetworkPolicy").values() for r in p["spec"]["ingress"]
                  for peer in r["from"] if "namespaceSelector" in peer]
        assert all(peer["podSelector"]["matchLabels"]["app" if "app" in peer["podSelector"]["matchLabels"]
                                                        else "app.kubernetes.io/name"]
                   in {"prometheus", "keda-operator"} for peer in others), others


def test_every_workload_has_a_disruption_budget_or_says_why(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for overlay, docs in rendered.items():
        budgets = list(objects(docs, "PodDisruptionBudget").values())
        for workload in workloads(docs):
            name = workload["metadata"]["name"]
            labels = workload["spec"]["template"]["metadata"]["labels"]
            mine = [b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()]
            reason = (workload["metadata"].get("annotations") or {}).get(NO_PDB, "")
            if not mine:
                assert len(reason) > 20, f"{overlay}: {name} has no PodDisruptionBudget and no {NO_PDB} reason"
                continue
            (budget,) = mine
            # a budget must allow one disruption at the smallest replica count, or it blocks every node drain
            replicas = min([workload["spec"]["replicas"]] + [
                h["spec"]["minReplicas"] for h in objects(docs, "HorizontalPodAutoscaler").values()
                if h["spec"]["scaleTargetRef"]["name"] == name])
            spec = budget["spec"]
            assert spec.get("maxUnavailable", 0) >= 1 or spec["minAvailable"] < replicas, (overlay, name)


def test_prometheus_scrapes_the_services_from_annotations(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for docs in rendered.values():
        for workload in workloads(docs):
            name = workload["metadata"]["name"]
            notes = workload["spec"]["template"]["metadata"].get("annotations", {})
            if name in HTTP_SERVICES:
                assert notes["prometheus.io/scrape"] == "true" and notes["prometheus.io/path"] == "/metrics"
                assert notes["prometheus.io/port"] == str(HTTP_SERVICES[name])


def test_grafana_provisioning_ships_every_file(rendered: dict[str, list[dict[str, Any]]]) -> None:
    shipped = {key for d in rendered["prod"] if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith(
        "grafana-") for key in d["data"]}
    files = {p.name for p in (REPO / "infra/grafana/provisioning").rglob("*") if p.is_file()}
    assert shipped == files
