"""The client and the `mlops` CLI against the real stack (trainer-api + Celery worker, MLflow, registry-proxy, a
predictor), as tests/conftest.py starts it: retrain and wait with progress, predict (production, a named model,
a version loading behind 503 + Retry-After, OIP v2), feedback, refusals with the server's reason, governance
(promote, rollback, canary, shadow, decisions, audit, DORA), and the CLI's --json output and exit codes."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from mlflow import MlflowClient
from mlops_client import (
    AsyncClient,
    AuthenticationError,
    Client,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    UnavailableError,
    ValidationError,
)
from mlops_client.cli import app
from mlops_client.models import Job
from typer.testing import CliRunner

from tests.predictor.models import metric_value
from tests.support.auth import ADMIN_TOKEN, principal_token
from tests.support.data import sms_subset, text_spec
from tests.support.registry import copies_of, wait_served

SPAM = "WINNER!! Claim your free prize now, call 09061701461 to collect your cash award"
HAM = "Are we still meeting for lunch tomorrow?"


@dataclass
class Stack:
    name: str
    data: Path
    urls: dict[str, str]
    client: Client
    job: Job
    progress: list[tuple[str, str, int]]

    def connect(self, **kwargs: object) -> Client:
        return Client(predictor_url=self.urls["predictor"], trainer_url=self.urls["trainer"],
                      registry_url=self.urls["registry"], **kwargs)  # type: ignore[arg-type]

    def cli(self, *args: str, token: str | None = ADMIN_TOKEN) -> Result:
        options = ["--predictor-url", self.urls["predictor"], "--trainer-url", self.urls["trainer"],
                   "--registry-url", self.urls["registry"], *(["--token", token] if token else [])]
        # COLUMNS: wide enough that Rich does not fold the tables' cells (CliRunner is no terminal: 80 otherwise)
        env = {"MLOPS_TOKEN": "", "REGISTRY_ADMIN_TOKEN": "", "COLUMNS": "200"}
        result = CliRunner().invoke(app, [*options, *args], env=env)
        return Result(result.exit_code, result.stdout, result.stderr)


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> object:
        assert self.code == 0, (self.code, self.stdout, self.stderr)
        return json.loads(self.stdout)


@pytest.fixture(scope="module")
def stack(registry_url: str, trainer_url: str, predictor_factory: Callable[..., str],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A model trained through the client (nothing in production before: the gate promotes version 1), and a
    predictor serving it."""
    name = f"client-{uuid.uuid4().hex[:8]}"
    predictor = predictor_factory(name)
    data = sms_subset(tmp_path_factory.mktemp("client-data") / "sms.csv", rows=400)
    urls = {"predictor": predictor, "trainer": trainer_url, "registry": registry_url}
    client = Client(predictor_url=predictor, trainer_url=trainer_url, registry_url=registry_url, token=ADMIN_TOKEN)
    progress: list[tuple[str, str, int]] = []
    accepted = client.retrain(name, spec=text_spec(data, 0.5))
    assert accepted.created and accepted.model_name == name
    job = client.wait_for_job(accepted.job_id, poll=0.1, timeout=600,
                              on_progress=lambda j: progress.append((j.status, j.stage, j.percent)))
    wait_served(predictor, "1", timeout=120)
    try:
        yield Stack(name, data, urls, client, job, progress)
    finally:
        client.close()


def test_retrain_and_wait_reports_stage_and_percent(stack: Stack) -> None:
    job = stack.job
    assert (job.status, job.decision, job.model_version) == ("succeeded", "promoted", "1"), job
    assert job.metrics.challenger and job.metrics.challenger["f1_macro"] >= 0.5
    percents = [p for _, _, p in stack.progress]
    assert percents == sorted(percents) and percents[-1] == 100, stack.progress
    assert len({stage for _, stage, _ in stack.progress}) >= 2, stack.progress
    assert stack.progress[-1][0] == "succeeded"


def test_predict_feedback_and_oip(stack: Stack) -> None:
    mlops = stack.client
    answer = mlops.predict([SPAM, HAM])
    assert (answer.predictions, answer.model_name, answer.model_version) == (["spam", "ham"], stack.name, "1")
    named = mlops.predict([SPAM], model=stack.name, probabilities=True)
    assert named.probabilities and set(named.probabilities[0]) == {"ham", "spam"}

    fed = mlops.feedback(answer.request_id, label="spam", index=0)
    assert (fed.correct, fed.model_version, fed.prediction) == (True, "1", "spam") and fed.window >= 1
    with pytest.raises(ConflictError) as again:
        mlops.feedback(answer.request_id, label="spam", index=0)
    assert again.value.status == 409 and "already" in str(again.value.detail)

    inferred = mlops.infer(stack.name, [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [HAM]}])
    assert inferred.model_version == "1" and inferred.output("predictions").data == ["ham"]

    async def served() -> tuple[list[object], str | None]:
        async with AsyncClient(predictor_url=stack.urls["predictor"], token=ADMIN_TOKEN) as client:
            scored, info = await asyncio.gather(client.predict([SPAM], model=stack.name),
                                                client.served_model(stack.name))
            return scored.predictions, info.model_version

    assert asyncio.run(served()) == (["spam"], "1")


def test_refusals_raise_the_right_exception_with_the_servers_reason(stack: Stack, registry_url: str) -> None:
    _, viewer = principal_token(registry_url, "viewer")
    with stack.connect(token=viewer) as as_viewer, pytest.raises(PermissionDeniedError) as refused:
        as_viewer.retrain(stack.name)
    assert refused.value.status == 403 and "viewer" in str(refused.value.detail)
    with stack.connect(token="") as anonymous, pytest.raises(AuthenticationError) as unknown:
        anonymous.retrain(stack.name)
    assert unknown.value.status == 401
    with pytest.raises(NotFoundError, match="no job 'nope'"):
        stack.client.job("nope")
    with pytest.raises(ValidationError) as empty:
        stack.client.predict([])
    assert empty.value.status == 422 and "instances" in str(empty.value)
    with pytest.raises(NotFoundError, match="registry-proxy answered 404"):
        stack.client.model(f"{stack.name}-missing")


def test_a_version_loading_behind_503_is_retried_until_it_answers(stack: Stack, mlflow_uri: str) -> None:
    """The predictor answers a version it does not hold yet with 503 + Retry-After while it loads it."""
    second, third = copies_of(mlflow_uri, stack.name, "1", 2)
    with stack.connect(token=ADMIN_TOKEN, retries=0) as impatient, pytest.raises(UnavailableError) as loading:
        impatient.predict([HAM], model=stack.name, version=second)
    assert loading.value.status == 503 and loading.value.headers.get("retry-after"), loading.value.headers
    assert "loading" in str(loading.value.detail)

    before = metric_value(stack.urls["predictor"], "predictor_model_requests_total", model_name=stack.name,
                          status="503") or 0
    with stack.connect(token=ADMIN_TOKEN, retries=30) as patient:
        answer = patient.predict([HAM], model=stack.name, version=third)
    assert (answer.model_version, answer.predictions) == (third, ["ham"])
    after = metric_value(stack.urls["predictor"], "predictor_model_requests_total", model_name=stack.name,
                         status="503") or 0
    assert after > before  # the client met at least one 503 and retried past it


def test_promote_rollback_audit_and_dora(stack: Stack, mlflow_uri: str) -> None:
    mlops = stack.client
    (version,) = copies_of(mlflow_uri, stack.name, "1", 1)
    promoted = mlops.promote(stack.name, version, reason="client test")
    assert (promoted.production_version, promoted.previous_version, promoted.changed) == (version, "1", True)
    rolled = mlops.rollback(stack.name, reason="client test: back")
    assert (rolled.production_version, rolled.rolled_back_version) == ("1", version)
    detail = mlops.model(stack.name)
    assert detail.production_version == "1" and version in [v.version for v in detail.versions]
    assert "production" in mlops.version(stack.name, "1").aliases

    actions = [e.action for e in mlops.audit(model=stack.name).items]
    assert {"promote", "rollback"} <= set(actions), actions
    report = mlops.dora(stack.name, window_days=1)
    assert report.rollbacks >= 1 and report.deployments >= 1, report


def test_cli_reads_as_json_and_as_tables(stack: Stack) -> None:
    models = stack.cli("models", "show", stack.name, "--json").json()
    assert isinstance(models, dict) and models["production_version"] == "1"
    predicted = stack.cli("predict", "--model", stack.name, "--json", SPAM, HAM).json()
    assert isinstance(predicted, dict) and predicted["predictions"] == ["spam", "ham"]
    jobs = stack.cli("jobs", "--model", stack.name, "--json").json()
    assert isinstance(jobs, list) and jobs[0]["job_id"] == stack.job.job_id
    job = stack.cli("job", stack.job.job_id, "--json").json()
    assert isinstance(job, dict) and job["status"] == "succeeded" and job["spec"]["task"] == "text-classification"
    me = stack.cli("whoami", "--json").json()
    assert isinstance(me, dict) and (me["name"], me["role"]) == ("admin", "admin")

    table = stack.cli("jobs", "--model", stack.name)
    assert table.code == 0 and stack.job.job_id[:8] in table.stdout and "succeeded" in table.stdout
    shown = stack.cli("job", stack.job.job_id)
    assert shown.code == 0 and "decision: promoted" in shown.stdout
    audit = stack.cli("audit", "--model", stack.name, "--json").json()
    assert isinstance(audit, dict) and audit["total"] >= 1
    dora = stack.cli("dora", stack.name, "--json").json()
    assert isinstance(dora, dict) and dora["model_name"] == stack.name


def test_cli_exit_codes(stack: Stack, registry_url: str) -> None:
    _, viewer = principal_token(registry_url, "viewer")
    refused = stack.cli("promote", stack.name, "1", token=viewer)
    assert refused.code == 1 and "403" in refused.stderr and "viewer" in refused.stderr, refused
    anonymous = stack.cli("retrain", stack.name, "--no-wait", token=None)
    assert anonymous.code == 1 and "401" in anonymous.stderr and "MLOPS_TOKEN" in anonymous.stderr, anonymous
    missing = stack.cli("models", "show", f"{stack.name}-missing")
    assert missing.code == 1 and "404" in missing.stderr
    assert stack.cli("promote", stack.name).code == 2  # usage: the version is missing
    assert stack.cli("predict", "--version", "1", HAM).code == 2  # --version needs --model
    assert stack.cli("feedback", "some-id").code == 2  # neither --label nor --value
    unreachable = CliRunner().invoke(app, ["--registry-url", "http://127.0.0.1:9", "--retries", "0",
                                           "models", "list"])
    assert unreachable.exit_code == 3 and "unreachable" in unreachable.stderr


def test_cli_datasets_upload_show_list(stack: Stack) -> None:
    uploaded = stack.cli("datasets", "upload", str(stack.data), "--json").json()
    assert isinstance(uploaded, dict) and uploaded["rows"] == len(pd.read_csv(stack.data))
    shown = stack.cli("datasets", "show", uploaded["dataset_id"], "--json").json()
    assert shown == uploaded
    listed = stack.cli("datasets", "list", "--json").json()
    assert isinstance(listed, list) and uploaded["dataset_id"] in [d["dataset_id"] for d in listed]
    sent: list[tuple[int, int]] = []
    again = stack.client.upload_dataset(stack.data, on_progress=lambda done, total: sent.append((done, total)))
    assert again.dataset_id == uploaded["dataset_id"]  # the same bytes, the same snapshot
    size = stack.data.stat().st_size
    assert sent and sent[-1] == (size, size) and all(t == size for _, t in sent)


def test_cli_canary_start_status_pause_resume_abort(stack: Stack, mlflow_uri: str) -> None:
    (version,) = copies_of(mlflow_uri, stack.name, "1", 1)
    started = stack.cli("canary", "start", stack.name, version, "--steps", "10,100", "--interval", "1h",
                        "--reason", "client test", "--json").json()
    assert isinstance(started, dict)
    assert (started["status"], started["weight"], started["version"]) == ("running", 10, version), started
    rollout = stack.client.rollout(stack.name)
    assert rollout.canary is not None and (rollout.canary.version, rollout.canary.weight) == (version, 10)
    assert stack.cli("canary", "start", stack.name, version).code == 1  # one canary at a time: 409
    paused = stack.cli("canary", "pause", stack.name, "--reason", "look first", "--json").json()
    assert isinstance(paused, dict) and paused["status"] == "paused"
    resumed = stack.cli("canary", "resume", stack.name, "--json").json()
    assert isinstance(resumed, dict) and resumed["status"] == "running"
    status = stack.cli("canary", "status", stack.name)
    assert status.code == 0 and "running" in status.stdout
    aborted = stack.cli("canary", "abort", stack.name, "--reason", "done", "--json").json()
    assert isinstance(aborted, dict) and aborted["status"] == "rolled_back" and aborted["weight"] == 0
    assert stack.client.rollout(stack.name).canary is None


def rollout_tag(mlflow_uri: str, name: str) -> dict[str, Any]:
    """The split the predictors follow, as registry-proxy wrote it on the registered model in MLflow."""
    raw = (MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri).get_registered_model(name).tags or {}) \
        .get("mlops.rollout")
    return {} if raw is None else json.loads(raw)


def test_cli_shadow_start_status_stop(stack: Stack, mlflow_uri: str, registry_url: str) -> None:
    (version,) = copies_of(mlflow_uri, stack.name, "1", 1)
    started = stack.cli("shadow", "start", stack.name, version, "--share", "20", "--reason", "client test",
                        "--json").json()
    assert isinstance(started, dict)
    assert (started["status"], started["share"], started["version"], started["production_version"],
            started["reason"]) == ("running", 20, version, "1", "client test"), started
    try:
        assert rollout_tag(mlflow_uri, stack.name)["shadow"] == {"version": version, "share": 20}
        rollout = stack.client.rollout(stack.name)
        assert rollout.shadow is not None and (rollout.shadow.version, rollout.shadow.share) == (version, 20)

        status = stack.cli("shadow", "status", stack.name, "--json").json()
        assert isinstance(status, dict) and (status["id"], status["status"]) == (started["id"], "running")
        assert "evidence" in status and "missing" in status  # the live evidence (or why not) comes with status
        shown = stack.cli("shadow", "status", stack.name)
        assert shown.code == 0 and f"shadow v{version} running" in shown.stdout and "20%" in shown.stdout, shown

        again = stack.cli("shadow", "start", stack.name, version)
        assert again.code == 1 and "409" in again.stderr and "stop it first" in again.stderr, again
        in_production = stack.cli("shadow", "start", stack.name, "1")
        assert in_production.code == 1 and "in production" in in_production.stderr, in_production

        _, viewer = principal_token(registry_url, "viewer")
        with stack.connect(token=viewer) as as_viewer, pytest.raises(PermissionDeniedError) as refused:
            as_viewer.stop_shadow(stack.name, "not mine to stop")
        assert refused.value.status == 403
        with stack.connect(token="") as anonymous, pytest.raises(AuthenticationError):
            anonymous.start_shadow(stack.name, version, 50)
        assert stack.client.shadow(stack.name).status == "running"  # neither refusal changed anything
    finally:
        stopped = stack.cli("shadow", "stop", stack.name, "--reason", "seen enough", "--json").json()
    assert isinstance(stopped, dict)
    assert (stopped["status"], stopped["ended_by"], stopped["end_reason"]) == ("stopped", "admin", "seen enough")
    assert rollout_tag(mlflow_uri, stack.name).get("shadow") is None
    assert stack.client.rollout(stack.name).shadow is None
    latest = stack.client.shadow(stack.name)  # the latest period stays readable once ended
    assert (latest.id, latest.status) == (started["id"], "stopped")
    with pytest.raises(ConflictError, match="no shadow running"):
        stack.client.stop_shadow(stack.name)
    assert stack.cli("shadow", "stop", stack.name).code == 1


def test_cli_retrain_wait_decisions_and_reject(stack: Stack, tmp_path: Path) -> None:
    """A bar nobody meets: the retrain followed by the CLI ends pending approval; the CLI lists and rejects it.
    A job over one class fails: exit code 4."""
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(text_spec(stack.data, 0.5)))
    job = stack.cli("retrain", stack.name, "--spec", str(spec_file), "--set", "metric.threshold=0.9999",
                    "--json").json()
    assert isinstance(job, dict) and (job["status"], job["decision"]) == ("succeeded", "pending_approval"), job
    pending = stack.cli("decisions", "--status", "pending", "--model", stack.name, "--json").json()
    assert isinstance(pending, list) and [d["version"] for d in pending] == [job["model_version"]]
    listed = stack.cli("decisions", "--model", stack.name)
    assert listed.code == 0 and "pending" in listed.stdout
    rejected = stack.cli("reject", str(pending[0]["id"]), "--comment", "not good enough", "--json").json()
    assert isinstance(rejected, dict) and (rejected["status"], rejected["comment"]) == ("rejected", "not good enough")
    assert stack.cli("approve", str(pending[0]["id"])).code == 1  # already decided: refused, with the reason

    one_class = tmp_path / "one-class.csv"
    pd.DataFrame({"text": [f"m {i}" for i in range(30)], "label": ["ham"] * 30}).to_csv(one_class, index=False)
    failed = stack.cli("retrain", stack.name, "--spec", str(spec_file), "--data", str(one_class))
    assert failed.code == 4, failed
    assert "queued" in failed.stdout and "failed" in failed.stdout and "single class" in failed.stdout
