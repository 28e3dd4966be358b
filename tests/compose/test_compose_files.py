"""Static checks of the compose files and Dockerfiles: the promises docker/README.md makes, without an engine.

`make compose-check` (scripts/compose-check.sh) proves the same stack on a real Docker engine.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.scripts import load_script

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = [REPO / "services" / s / "Dockerfile" for s in ("trainer", "registry-proxy", "predictor")] + [
    REPO / "docker" / "mlflow" / "Dockerfile"
]
PUBLISHED = {"predictor-lb", "registry-proxy", "trainer-api", "prometheus", "grafana", "mlflow"}
BUILT = {"secrets-init", "mlflow", "registry-proxy", "trainer-api", "trainer-worker", "trainer-beat", "predictor"}
SECRETS_DIR = "/run/secrets/mlops"
# Which secrets-init volume (docker/secrets-init/secrets_init.py VOLUMES) each service mounts.
SECRET_VOLUME = {"postgres": "postgres", "redis": "redis", "mlflow": "mlflow", "registry-proxy": "registry-proxy",
                 "trainer-api": "trainer", "trainer-worker": "trainer", "trainer-beat": "trainer",
                 "predictor": "predictor", "prometheus": "prometheus", "grafana": "grafana",
                 "alertmanager": "alertmanager"}
# Secret files a service's own config files name (mounted from the repository) rather than its compose entry.
CONFIG_FILES = {"prometheus": ["infra/prometheus/prometheus.yml", "docker/prometheus/prometheus.hostnet.yml"],
                "alertmanager": ["infra/alertmanager/alertmanager.yml"]}
# The settings each Python service reads from a secret file, and its MLflow user.
SECRET_SETTINGS = {
    "registry-proxy": {"REDIS_URL", "REGISTRY_DATABASE_URL", "REGISTRY_ADMIN_TOKEN", "REGISTRY_SERVICE_TOKEN",
                       "TRAINER_API_TOKEN", "MLFLOW_TRACKING_PASSWORD"},
    **{name: {"REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "REGISTRY_SERVICE_TOKEN",
              "MLFLOW_TRACKING_PASSWORD", "SERVED_LOG_DATABASE_URL"}
       for name in ("trainer-api", "trainer-worker", "trainer-beat")},
    "predictor": {"REDIS_URL", "MLFLOW_TRACKING_PASSWORD", "SERVED_LOG_DATABASE_URL"},
}
MLFLOW_USER = {"registry-proxy": "registry-proxy", "trainer-api": "trainer", "trainer-worker": "trainer",
               "trainer-beat": "trainer", "predictor": "predictor"}
# MLflow users with no service environment of their own: Prometheus scrapes MLflow's /metrics as `prometheus`.
MLFLOW_OTHER_USERS = {"prometheus"}
SECRET_NAME = re.compile(r"(PASSWORD|TOKEN|SECRET|_URL$|_URI$|BACKEND$)")


def load(name: str) -> dict:
    return yaml.safe_load((REPO / name).read_text())


secrets_init = load_script("docker/secrets-init/secrets_init.py")


def secret_files_named(service: dict) -> set[str]:
    """Every /run/secrets/mlops/<file> a service's definition refers to (environment, command, healthcheck...)."""
    text = yaml.safe_dump({k: v for k, v in service.items() if k != "volumes"})
    return set(re.findall(rf"{SECRETS_DIR}/([A-Za-z0-9_.-]+)", text))


@pytest.fixture(scope="module")
def base() -> dict:
    return load("docker-compose.yml")["services"]


def test_every_service_is_there(base: dict) -> None:
    assert set(base) == {"secrets-init", "postgres", "redis", "mlflow", "registry-proxy", "trainer-api",
                         "trainer-worker", "trainer-beat", "predictor", "predictor-lb", "prometheus", "grafana",
                         "alertmanager"}


def test_every_service_has_a_healthcheck(base: dict) -> None:
    dockerfile_health = {"mlflow", "registry-proxy", "trainer-api", "predictor"}
    for name, service in base.items():
        if name == "secrets-init":  # one-shot: the others wait for it to complete
            assert "healthcheck" not in service and "restart" not in service
            continue
        if name == "predictor-lb":  # no HTTP client in the haproxy image; it checks the predictors, none waits for it
            assert not any(name in (s.get("depends_on") or {}) for s in base.values())
            continue
        assert "healthcheck" in service or name in dockerfile_health, name
    for path in DOCKERFILES:
        assert re.search(r"^HEALTHCHECK .*\n\s+CMD \[\"python\", \"-c\", \".*urllib.request.*/health",
                         path.read_text(), re.M), path


def test_dependencies_wait_for_health_and_for_the_secrets(base: dict) -> None:
    """Every service starts after secrets-init has completed, and after the servers it uses are healthy."""
    assert "depends_on" not in base["secrets-init"]
    for name, service in base.items():
        if name == "secrets-init":
            continue
        deps = service.get("depends_on") or {}
        assert deps.get("secrets-init") == {"condition": "service_completed_successfully"}, name
        for dep, cond in deps.items():
            if dep != "secrets-init":
                assert cond == {"condition": "service_healthy"}, (name, dep)
    assert set(base["mlflow"]["depends_on"]) == {"secrets-init", "postgres"}


def test_workers_and_predictors_scale(base: dict) -> None:
    """`docker compose up --scale trainer-worker=3 --scale predictor=3`: no fixed name, no published port; the
    predictors are reached through predictor-lb, which follows them by their DNS name."""
    override = load("docker-compose.override.yml")["services"]
    for name in ("trainer-worker", "predictor"):
        assert "container_name" not in base[name] and "ports" not in base[name], name
        assert name not in override, name
    assert not any("container_name" in s for s in base.values())
    assert override["predictor-lb"]["ports"] == ["${BIND_ADDRESS:-127.0.0.1}:${PREDICTOR_PORT:-8000}:8000"]
    lb = base["predictor-lb"]
    assert lb["environment"]["PREDICTOR_ADDRESS"] == "predictor:8000" and lb["environment"]["LB_BIND"] == ":8000"
    assert lb["environment"]["DNS_RESOLVER"] == "127.0.0.11:53"  # Docker's embedded DNS: one record per replica
    assert lb["depends_on"]["predictor"] == {"condition": "service_healthy"}


def test_the_load_balancer_config_is_the_repository_file_and_gets_every_variable(base: dict) -> None:
    lb = base["predictor-lb"]
    assert lb["volumes"] == ["./docker/haproxy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro"]
    assert lb["command"][-2:] == ["-f", "/usr/local/etc/haproxy/haproxy.cfg"]
    config = re.sub(r"^\s*#.*$", "", (REPO / "docker/haproxy/haproxy.cfg").read_text(), flags=re.M)
    used = set(re.findall(r"\$\{([A-Z_]+)\}", config))
    assert used == set(lb["environment"])
    assert re.search(r"^\s*option httpchk GET /ready$", config, re.M)
    assert re.search(r"^\s*option redispatch", config, re.M) and re.search(r"^\s*retry-on .*conn-failure", config, re.M)
    # the public image and the local stand-in are the same HAProxy release (Debian bookworm's is 2.6)
    local = load("docker-compose.local.yml")["services"]
    assert lb["image"] == "haproxy:2.6" and local["predictor-lb"]["image"] == "mlops/haproxy:2.6"
    assert "haproxy:mlops/haproxy:2.6" in (REPO / "docker/build-base-images.sh").read_text()
    # under host networking: the balancer on the published port, the one predictor beside it, Prometheus on that
    hostnet = load("docker-compose.hostnet.yml")["services"]
    lb_env, predictor_port = hostnet["predictor-lb"]["environment"], hostnet["predictor"]["environment"]["UVICORN_PORT"]
    assert lb_env["LB_BIND"] == "127.0.0.1:18000"
    assert lb_env["PREDICTOR_ADDRESS"] == f"127.0.0.1:{predictor_port}" != "127.0.0.1:18000"
    assert f'"127.0.0.1:{predictor_port}"' in (REPO / "docker/prometheus/prometheus.hostnet.yml").read_text()


def test_only_public_apis_grafana_and_prometheus_are_published(base: dict) -> None:
    assert not any("ports" in s for s in base.values()), "ports belong in docker-compose.override.yml"
    override = load("docker-compose.override.yml")["services"]
    assert {n for n, s in override.items() if s.get("ports")} == PUBLISHED
    assert all(p.startswith("127.0.0.1:") for p in override["mlflow"]["ports"])
    # the others on the loopback interface unless BIND_ADDRESS says otherwise
    for name in PUBLISHED - {"mlflow"}:
        assert all(p.startswith("${BIND_ADDRESS:-127.0.0.1}:") for p in override[name]["ports"]), name
    assert re.search(r"^BIND_ADDRESS=127\.0\.0\.1$", (REPO / ".env.example").read_text(), re.M)


def test_no_env_file_is_needed(base: dict) -> None:
    """`docker compose up` from a fresh clone: nothing refers to a .env that does not exist, and no variable is
    required (${VAR:?...})."""
    assert not any("env_file" in s for s in base.values())
    for name in ("docker-compose.yml", "docker-compose.override.yml", "docker-compose.local.yml",
                 "docker-compose.hostnet.yml"):
        text = (REPO / name).read_text()
        assert not re.search(r"\$\{[A-Z0-9_]+:?\?", text), name
        assert "changethis" not in text, name
    assert "changethis" not in (REPO / ".env.example").read_text()


def test_each_service_gets_only_its_own_secrets(base: dict) -> None:
    """secrets-init writes one volume per service with exactly the files it reads; each service mounts its own
    volume read-only, and nothing else that holds a secret."""
    volumes = secrets_init.VOLUMES
    assert set(volumes) == set(SECRET_VOLUME.values())
    init = base["secrets-init"]
    assert sorted(init["volumes"]) == sorted(["secrets:/secrets"] + [f"secrets-{v}:/out/{v}" for v in volumes])
    for name, service in base.items():
        if name == "secrets-init":
            continue
        mounts = [v for v in service.get("volumes", []) if v.split(":")[0].startswith("secrets")]
        if name not in SECRET_VOLUME:
            assert not mounts and not secret_files_named(service), name
            continue
        assert mounts == [f"secrets-{SECRET_VOLUME[name]}:{SECRETS_DIR}:ro"], name
        named = secret_files_named(service)
        for config in CONFIG_FILES.get(name, []):
            named |= set(re.findall(rf"{SECRETS_DIR}/([A-Za-z0-9_.-]+)", (REPO / config).read_text()))
        assert named == set(volumes[SECRET_VOLUME[name]]), name
        # and no secret in plain: every secret-looking variable is a path under /run/secrets/mlops
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(key) and not key.endswith("_FILE") and value is not None:
                assert key in {"TRAINER_ALERT_WEBHOOK_URL", "OPERATOR_ALERT_WEBHOOK_URL", "MLFLOW_TRACKING_URI",
                               "REGISTRY_URL", "PUBLIC_URL", "MLFLOW_PUBLIC_URL", "PROMETHEUS_URL"}, (name, key)
    # The Python services: setting X from X_FILE, exactly the secrets each one uses.
    for name, own in SECRET_SETTINGS.items():
        env = base[name]["environment"]
        from_files = {k.removesuffix("_FILE") for k, v in env.items() if k.endswith("_FILE")}
        assert from_files == own, name
        assert not own & set(env), f"{name}: a plain value would win over the file"
        assert all(env[f"{k}_FILE"].startswith(f"{SECRETS_DIR}/") for k in own), name
        assert env["MLFLOW_TRACKING_USERNAME"] == MLFLOW_USER[name], name
    # Only the trainer containers get the (optional, user-given) S3 secret key.
    assert {n for n, s in base.items() if "AWS_SECRET_ACCESS_KEY" in (s.get("environment") or {})} == {
        "trainer-api", "trainer-worker", "trainer-beat"}


def test_the_served_log_database_reaches_the_predictors_and_the_trainer(base: dict[str, Any]) -> None:
    """The predictors log what they served to Postgres and the training workers read it back for production
    datasets: both name the same URL file, under the setting each service actually reads (a wrong name would log
    nothing, silently); only Postgres holds the role's password; and the predictor does not wait for Postgres,
    since the log is best effort and serving must not depend on it."""
    from predictor.servedlog import ServedLogSettings
    from trainer.settings import TrainerSettings

    assert "served_log_database_url" in ServedLogSettings.model_fields
    assert "served_log_database_url" in TrainerSettings.model_fields
    for name in ("predictor", "trainer-api", "trainer-worker", "trainer-beat"):
        env = base[name]["environment"]
        assert env["SERVED_LOG_DATABASE_URL_FILE"] == f"{SECRETS_DIR}/served_log_database_url", name
    volumes = secrets_init.VOLUMES
    assert volumes["predictor"]["served_log_database_url"] == volumes["trainer"]["served_log_database_url"]
    assert {v for v, files in volumes.items() if "postgres_served_log_password" in files.values()} == {"postgres"}
    assert "postgres" not in base["predictor"]["depends_on"]


def test_secrets_init_takes_every_override_and_nothing_is_a_shared_default(base: dict) -> None:
    env = base["secrets-init"]["environment"]
    example = (REPO / ".env.example").read_text()
    for var in secrets_init.ENV.values():
        assert env[var] == f"${{{var}:-}}", var  # empty: generated at random on the first start
        assert re.search(rf"^# {var}=$", example, re.M), f"{var}: listed in .env.example without a value"
    assert base["secrets-init"]["network_mode"] == "none"
    assert base["secrets-init"]["build"]["context"] == "./docker"


def test_the_servers_read_their_secrets_from_files(base: dict) -> None:
    pg = base["postgres"]["environment"]
    assert pg["POSTGRES_PASSWORD_FILE"] == f"{SECRETS_DIR}/postgres_password" and "POSTGRES_PASSWORD" not in pg
    init_script = (REPO / "docker/postgres/init-databases.sh").read_text()
    for var in ("MLFLOW_DB_PASSWORD", "REGISTRY_DB_PASSWORD", "SERVED_LOG_DB_PASSWORD"):
        assert pg[f"{var}_FILE"].startswith(SECRETS_DIR) and var in init_script
    assert "CREATE DATABASE mlflow_auth OWNER mlflow" in init_script
    assert "CREATE ROLE servedlog LOGIN PASSWORD :'served_log_password'" in init_script
    assert "CREATE DATABASE served_log OWNER servedlog" in init_script
    assert base["redis"]["command"][:3] == ["redis-server", "--aclfile", f"{SECRETS_DIR}/users.acl"]
    assert "--user healthcheck" in base["redis"]["healthcheck"]["test"][1]
    ml = base["mlflow"]["environment"]
    for var in ("MLFLOW_BACKEND_STORE_URI", "MLFLOW_AUTH_DATABASE_URI", "MLFLOW_AUTH_ADMIN_PASSWORD",
                "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert ml[f"{var}_FILE"].startswith(f"{SECRETS_DIR}/") and var not in ml, var
    assert dict(u.split("=") for u in ml["MLFLOW_SERVICE_USERS"].split()) == {
        user: f"{SECRETS_DIR}/mlflow_password_{user.replace('-', '_')}"
        for user in set(MLFLOW_USER.values()) | MLFLOW_OTHER_USERS}
    gf = base["grafana"]
    assert gf["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"] == f"{SECRETS_DIR}/grafana_admin_password"
    assert f"cat {SECRETS_DIR}/trainer_api_token" in " ".join(gf["entrypoint"])


def test_grafana_gets_every_variable_its_provisioning_uses(base: dict) -> None:
    """Grafana expands ${VAR} in its provisioning files from its environment, and refuses to provision a
    contact point without a URL: every variable there has a value (or a default) in compose."""
    grafana = base["grafana"]
    given = {k for k, v in grafana["environment"].items() if v not in (None, "")}
    given |= set(re.findall(r"export ([A-Z_][A-Z0-9_]*)", " ".join(grafana.get("entrypoint") or [])))
    used = set()
    for path in (REPO / "infra/grafana/provisioning").rglob("*.y*ml"):
        # ${VAR} and $VAR (upper case: $labels and $values are the alert templates' own)
        for braced, bare in re.findall(r"\$\{([A-Za-z_]\w*)\}|\$([A-Z_][A-Z0-9_]*)\b", path.read_text()):
            used.add(braced or bare)
    assert {"TRAINER_ALERT_WEBHOOK_URL", "TRAINER_API_TOKEN", "OPERATOR_ALERT_WEBHOOK_URL"} <= used
    assert used - given == set(), "give these to the grafana service in docker-compose.yml"
    for key in used & set(grafana["environment"]):
        value = str(grafana["environment"][key])
        assert not value.startswith("${") or ":-" in value, f"{key} needs a default: {value}"


def test_state_lives_in_named_volumes(base: dict) -> None:
    volumes = load("docker-compose.yml")["volumes"]
    mounts = {name: [v.split(":")[0] for v in s.get("volumes", [])] for name, s in base.items()}
    assert "postgres-data" in mounts["postgres"]
    assert "mlflow-artifacts" in mounts["mlflow"]
    assert "grafana-data" in mounts["grafana"]
    assert "datasets" in mounts["trainer-api"] and "datasets" in mounts["trainer-worker"]
    assert {"postgres-data", "mlflow-artifacts", "grafana-data", "datasets"} <= set(volumes)


def test_local_and_hostnet_overrides_cover_the_stack(base: dict) -> None:
    local = load("docker-compose.local.yml")["services"]
    hostnet = load("docker-compose.hostnet.yml")["services"]
    for name in BUILT:
        assert local[name]["build"]["args"]["PYTHON_IMAGE"] == "mlops/python:3.11-bookworm", name
        assert local[name]["build"]["network"] == "host", name
    assert {n for n, s in hostnet.items() if s.get("network_mode") == "host"} == set(base) - {"secrets-init"}
    assert "network_mode" not in hostnet["secrets-init"], "secrets-init needs no network"
    assert not any("ports" in s for s in hostnet.values())
    # under host networking the URLs secrets-init writes point at the shifted ports, and nothing overrides them
    assert hostnet["secrets-init"]["environment"] == {"POSTGRES_ADDRESS": "127.0.0.1:15432",
                                                      "REDIS_ADDRESS": "127.0.0.1:16379"}
    for name, service in hostnet.items():
        env = service.get("environment") or {}
        assert not {k for k in env if k in {"REDIS_URL", "CELERY_BROKER_URL", "REGISTRY_DATABASE_URL",
                                            "MLFLOW_BACKEND_STORE_URI", "SERVED_LOG_DATABASE_URL"}}, name


def test_every_compose_variable_is_in_env_example(base: dict) -> None:
    example = (REPO / ".env.example").read_text()
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", example, re.M))
    used = set()
    for name in ("docker-compose.yml", "docker-compose.override.yml", "docker-compose.hostnet.yml"):
        used |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", (REPO / name).read_text()))
    # settings passed on from .env or the environment when set (no value in the compose file)
    passed = {k for s in base.values() for k, v in (s.get("environment") or {}).items() if v is None}
    assert used - listed == set()
    assert passed - listed == set()


def test_every_setting_of_env_example_reaches_a_service(base: dict) -> None:
    """Without env_file, a setting in .env only reaches a container that the compose file passes it to."""
    example = (REPO / ".env.example").read_text()
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", example, re.M))
    compose_text = "".join((REPO / n).read_text() for n in ("docker-compose.yml", "docker-compose.override.yml"))
    reaching = {k for s in base.values() for k in (s.get("environment") or {})}
    reaching |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", compose_text))
    # set by compose itself (addresses, files, image paths) or only for `make dev`
    compose_sets = {"MLFLOW_TRACKING_URI", "REDIS_URL", "REGISTRY_URL", "REGISTRY_DATABASE_URL",
                    "MLFLOW_BACKEND_STORE_URI", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "MODELS_DIR",
                    "DATASETS_DIR", "PUBLIC_URL"}
    assert listed - reaching - compose_sets == set()


def test_dockerfiles_install_only_their_own_locked_packages_share_layers_and_run_as_non_root() -> None:
    """Each image installs its own workspace package (the services also mlops-common) from uv.lock, dependencies
    in layers before the code; the lines up to mlops-common's dependencies are the same in the services' images."""
    own = {"trainer": "mlops-trainer", "registry-proxy": "mlops-registry-proxy", "predictor": "mlops-predictor",
           "mlflow": "mlops-mlflow-server"}
    heads = []
    for path in DOCKERFILES:
        lines = [ln for ln in path.read_text().splitlines() if ln and not ln.startswith("#")]
        syncs = [i for i, ln in enumerate(lines) if "uv sync --frozen --no-dev --package " in ln]
        packages = {re.search(r"--package (\S+)", lines[i])[1] for i in syncs}
        assert own[path.parent.name] in packages and packages <= {own[path.parent.name], "mlops-common"}, path
        first_code_copy = next(i for i, ln in enumerate(lines)
                               if re.match(r"COPY (services|docker)/", ln) and "pyproject.toml" not in ln)
        assert syncs[0] < first_code_copy, path
        if path.parent.name != "mlflow":
            heads.append(lines[: syncs[0] + 1])
        users = [ln for ln in lines if ln.startswith("USER ")]
        assert users and users[-1] != "USER root", path
    assert len(heads) == 3 and all(h == heads[0] for h in heads), "mlops-common's dependency layer must be shared"
