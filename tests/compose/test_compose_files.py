"""Static checks of the compose files and Dockerfiles: the promises docker/README.md makes, without an engine.

`make compose-check` (scripts/compose-check.sh) proves the same stack on a real Docker engine.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = [REPO / "services" / s / "Dockerfile" for s in ("trainer", "registry-proxy", "predictor")] + [
    REPO / "docker" / "mlflow" / "Dockerfile"
]
PUBLISHED = {"predictor", "registry-proxy", "trainer-api", "prometheus", "grafana", "mlflow"}
BUILT = {"mlflow", "registry-proxy", "trainer-api", "trainer-worker", "trainer-beat", "predictor"}


def load(name: str) -> dict:
    return yaml.safe_load((REPO / name).read_text())


@pytest.fixture(scope="module")
def base() -> dict:
    return load("docker-compose.yml")["services"]


def test_every_service_is_there(base: dict) -> None:
    assert set(base) == {"postgres", "redis", "mlflow", "registry-proxy", "trainer-api", "trainer-worker",
                         "trainer-beat", "predictor", "prometheus", "grafana"}


def test_every_service_has_a_healthcheck(base: dict) -> None:
    dockerfile_health = {"mlflow", "registry-proxy", "trainer-api", "predictor"}
    for name, service in base.items():
        assert "healthcheck" in service or name in dockerfile_health, name
    for path in DOCKERFILES:
        assert re.search(r"^HEALTHCHECK .*\n\s+CMD \[\"python\", \"-c\", \".*urllib.request.*/health",
                         path.read_text(), re.M), path


def test_dependencies_wait_for_health(base: dict) -> None:
    for name, service in base.items():
        for dep, cond in (service.get("depends_on") or {}).items():
            assert cond == {"condition": "service_healthy"}, (name, dep)
    assert set(base["mlflow"]["depends_on"]) == {"postgres"}


def test_workers_scale(base: dict) -> None:
    override = load("docker-compose.override.yml")["services"]
    worker = base["trainer-worker"]
    assert "container_name" not in worker and "ports" not in worker
    assert "trainer-worker" not in override
    assert not any("container_name" in s for s in base.values())


def test_only_public_apis_grafana_and_prometheus_are_published(base: dict) -> None:
    assert not any("ports" in s for s in base.values()), "ports belong in docker-compose.override.yml"
    override = load("docker-compose.override.yml")["services"]
    assert {n for n, s in override.items() if s.get("ports")} == PUBLISHED
    assert all(p.startswith("127.0.0.1:") for p in override["mlflow"]["ports"])


def test_each_service_gets_only_its_own_secrets(base: dict) -> None:
    """env_file hands every Python service the whole .env; the compose file blanks the secrets a service has no
    use for, so a compromised predictor holds no token and no database password."""
    example = (REPO / ".env.example").read_text()
    secrets = set(re.findall(r"^#?\s*([A-Z_]*(?:PASSWORD|TOKEN|SECRET_ACCESS_KEY))=", example, re.M))
    assert {"POSTGRES_PASSWORD", "REGISTRY_ADMIN_TOKEN", "TRAINER_API_TOKEN"} <= secrets
    needs = {"predictor": set(), "registry-proxy": {"REGISTRY_ADMIN_TOKEN", "REGISTRY_SERVICE_TOKEN"}}
    needs |= {name: {"REGISTRY_SERVICE_TOKEN", "TRAINER_API_TOKEN", "AWS_SECRET_ACCESS_KEY"}
              for name in ("trainer-api", "trainer-worker", "trainer-beat")}
    for name, own in needs.items():
        service = base[name]
        assert service["env_file"], name
        env = service["environment"]
        given = {key for key in secrets if env.get(key) != ""}
        assert given == own, name
        assert all(env[key].startswith((f"${{{key}:?", f"${{{key}:-")) for key in own), name


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
    assert {n for n, s in hostnet.items() if s.get("network_mode") == "host"} == set(base)
    assert not any("ports" in s for s in hostnet.values())


def test_every_compose_variable_is_in_env_example() -> None:
    example = (REPO / ".env.example").read_text()
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", example, re.M))
    used = set()
    for name in ("docker-compose.yml", "docker-compose.override.yml", "docker-compose.hostnet.yml"):
        used |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", (REPO / name).read_text()))
    assert used - listed - {"MLOPS_ENV_FILE"} == set()


def test_dockerfiles_share_the_dependency_layer_and_run_as_non_root() -> None:
    heads = []
    for path in DOCKERFILES:
        lines = [ln for ln in path.read_text().splitlines() if ln and not ln.startswith("#")]
        pip = next(i for i, ln in enumerate(lines) if ln.startswith("RUN pip install"))
        heads.append(lines[: pip + 1])
        first_code_copy = next(i for i, ln in enumerate(lines) if re.match(r"COPY (services|docker)/", ln))
        assert pip < first_code_copy, path
        users = [ln for ln in lines if ln.startswith("USER ")]
        assert users and users[-1] != "USER root", path
    assert all(h == heads[0] for h in heads), "the lines up to the pip install must be identical (shared cache)"
