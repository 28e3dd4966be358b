"""A real retrain of the SMS spam model on a small subset, through the real stack: the job reaches
succeeded, registry-proxy registers one version and decides with its own policy, the run records everything a
run must record, the test split becomes the proposed golden set, and a pinned golden set is scored by both
versions."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from mlops_common.settings import REPO_ROOT
from mlops_common.spec import resolve_spec
from tests.support.auth import ADMIN
from tests.trainer.helpers import FAST_CANDIDATES, sms_subset, submit, text_spec, wait_job

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def subset(base_env: dict[str, str]) -> Path:
    return sms_subset(Path(base_env["DATASETS_DIR"]) / "inputs" / "sms-400.csv", rows=400)


def test_sms_spam_retrain_registers_and_gates(trainer_url: str, registry_url: str, mlflow_uri: str,
                                             model_name: str, subset: Path) -> None:
    # The shipped sms-spam spec (all four candidates, incl. Word2vec) under a fresh model name, on the subset.
    spec = resolve_spec(REPO_ROOT / "models", "sms-spam").model_dump(mode="json", exclude={"name"})
    spec["data"]["uri"] = str(subset)
    spec["metric"]["threshold"] = 0.6
    response = submit(trainer_url, model_name, spec, idempotency_key="first")
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    job = wait_job(trainer_url, job_id, timeout=400)
    assert job["status"] == "succeeded", job
    assert job["stage"] == "done" and job["progress"] == 1.0
    assert job["model_version"] == "1"
    assert job["decision"] == "promoted"  # no production yet and the challenger meets 0.6
    assert job["metrics"]["challenger"]["f1_macro"] >= 0.6
    assert job["metrics"]["production"] is None
    assert set(job["metrics"]["challenger"]) >= {"f1_macro", "accuracy", "f1_weighted"}  # every metric of the task
    assert job["dataset"]["rows"] == 400 and len(job["dataset"]["sha256"]) == 64
    # registry-proxy decided with its own policy (seeded from the spec's metric block for a new model).
    assert job["policy"] == {"metric": "f1_macro", "higher_is_better": True, "threshold": 0.6, "margin": 0.0}
    assert "f1_macro" in job["reason"] and job["trainer_outcome"] == "promoted"
    assert job["golden"] is None  # no golden set yet
    split = job["test_split"]
    assert len(split["sha256"]) == 64 and split["rows"] == job["dataset"]["rows_test"]
    statuses = {c["candidate"]: c["status"] for c in job["candidates"]}
    assert statuses["tfidf-logreg"] == "succeeded" and len(statuses) == 4

    client = MlflowClient(mlflow_uri)
    versions = client.search_model_versions(f"name = '{model_name}'")
    assert [v.version for v in versions] == ["1"]
    version = versions[0]
    assert version.tags["mlops.job_id"] == job_id
    assert client.get_model_version_by_alias(model_name, "production").version == "1"
    assert job["model_uri"].startswith(("models:/", "runs:/"))  # logged by the trainer, registered by the proxy

    run = client.get_run(job["run_id"])
    assert version.run_id == run.info.run_id
    assert run.data.tags["mlops.job_id"] == job_id
    assert "mlflow.source.git.commit" in run.data.tags or "mlops.code_version" in run.data.tags
    assert run.data.metrics["rows_train"] > 0 and "test_f1_macro" in run.data.metrics
    assert run.inputs.dataset_inputs[0].dataset.digest == job["dataset"]["sha256"][:32]
    assert json.loads(run.inputs.dataset_inputs[0].dataset.profile)["num_rows"] == 400
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"spec.json", "plots", "reference", "dataset"} <= artifacts
    assert client.list_artifacts(run.info.run_id, "plots")[0].path == "plots/confusion_matrix.png"
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children)

    # Same key: the first job, nothing trained again.
    again = submit(trainer_url, model_name, spec, idempotency_key="first")
    assert again.status_code == 200 and again.json()["job_id"] == job_id

    # The registry recorded the gate call.
    detail = httpx.get(f"{registry_url}/models/{model_name}", timeout=10, headers=ADMIN).json()
    assert "production" in json.dumps(detail)
    # The first promotion proposed the job's test split (a snapshot the trainer can load) as the golden set.
    golden = httpx.get(f"{registry_url}/models/{model_name}/golden-set", timeout=10, headers=ADMIN)
    assert golden.status_code == 200, golden.text
    assert golden.json()["status"] == "proposed" and golden.json()["sha256"] == split["sha256"]
    snapshot = httpx.get(f"{trainer_url}/datasets/{split['sha256']}", timeout=10, headers=ADMIN)
    assert snapshot.status_code == 200, snapshot.text
    assert snapshot.json()["rows"] == split["rows"]
    assert set(snapshot.json()["columns"]) == set(pd.read_csv(subset).columns)  # the dataset's own columns
    assert run.data.tags["mlops.test_split_sha256"] == split["sha256"]

    metrics = httpx.get(f"{trainer_url}/metrics").text
    assert f'trainer_jobs_total{{model_name="{model_name}",status="succeeded"}} 1.0' in metrics
    assert f'trainer_gate_decisions_total{{decision="promoted",model_name="{model_name}"}}' in metrics \
        or f'trainer_gate_decisions_total{{model_name="{model_name}",decision="promoted"}} 1.0' in metrics


def test_second_retrain_evaluates_production_and_keeps_it(trainer_url: str, mlflow_uri: str, model_name: str,
                                                          subset: Path) -> None:
    good = {"task": "text-classification",
            "data": {"uri": str(subset), "text_column": "text", "label_column": "label"},
            "metric": {"name": "f1_macro", "higher_is_better": True, "threshold": 0.6},
            "candidates": [{"featurizer": {"type": "tfidf"}, "estimator": {"type": "logreg", "params": {"C": 10.0}},
                            "grid": {"estimator__class_weight": [None, "balanced"]}},
                           {"featurizer": {"type": "bow"},
                            "estimator": {"type": "knn", "params": {"n_neighbors": 999}}}]}
    first = wait_job(trainer_url, submit(trainer_url, model_name, good).json()["job_id"])
    assert first["status"] == "succeeded", first
    assert first["decision"] == "promoted", first
    # one candidate fails (more neighbours than rows): logged as failed, the job goes on
    failed = [c for c in first["candidates"] if c["status"] == "failed"]
    assert len(failed) == 1 and "n_neighbors" in failed[0]["error"]
    # the grid trained each point as its own child run
    assert {"tfidf-logreg[class_weight=None]", "tfidf-logreg[class_weight=balanced]"} <= {
        c["candidate"] for c in first["candidates"] if c["status"] == "succeeded"}

    weak = {**good, "candidates": [{"featurizer": {"type": "bow", "params": {"max_features": 2}},
                                    "estimator": {"type": "knn", "params": {"n_neighbors": 1}}}]}
    second = wait_job(trainer_url, submit(trainer_url, model_name, weak).json()["job_id"])
    assert second["status"] == "succeeded", second
    assert second["production_version"] == "1" and second["model_version"] == "2"
    assert second["metrics"]["production"]["f1_macro"] > second["metrics"]["challenger"]["f1_macro"]
    assert second["decision"] == "kept"
    client = MlflowClient(mlflow_uri)
    assert client.get_model_version_by_alias(model_name, "production").version == "1"
    assert client.get_model_version_by_alias(model_name, "challenger").version == "2"


def test_retrain_from_the_exact_bytes_after_the_snapshot_is_lost(trainer_url: str, model_name: str,
                                                                 base_env: dict[str, str]) -> None:
    data = sms_subset(Path(base_env["DATASETS_DIR"]) / "inputs" / f"{model_name}.csv", rows=300, seed=7)
    spec = text_spec(data, threshold=0.5, candidates=FAST_CANDIDATES[:1])
    first = wait_job(trainer_url, submit(trainer_url, model_name, spec).json()["job_id"])
    assert first["status"] == "succeeded", first
    sha = first["dataset"]["sha256"]
    for path in Path(base_env["DATASETS_DIR"]).glob(f"{sha}.*"):
        path.unlink()  # the volume is gone; the run still holds the bytes
    assert httpx.get(f"{trainer_url}/datasets/{sha}").status_code == 404

    again = submit(trainer_url, model_name, {**spec, "data": {**spec["data"], "uri": sha}})
    assert again.status_code == 202, again.text
    second = wait_job(trainer_url, again.json()["job_id"])
    assert second["status"] == "succeeded", second
    assert second["dataset"]["sha256"] == sha and second["dataset"]["rows"] == 300
    assert httpx.get(f"{trainer_url}/datasets/{sha}").status_code == 200


def test_all_candidates_failing_fails_the_job_and_its_run(trainer_url: str, mlflow_uri: str, model_name: str,
                                                          base_env: dict[str, str]) -> None:
    data = sms_subset(Path(base_env["DATASETS_DIR"]) / "inputs" / f"{model_name}.csv", rows=120, seed=5)
    hopeless = [{"featurizer": {"type": "bow"}, "estimator": {"type": "knn", "params": {"n_neighbors": 500}}},
                {"featurizer": {"type": "tfidf"}, "estimator": {"type": "knn", "params": {"n_neighbors": 600}}}]
    job = wait_job(trainer_url, submit(trainer_url, model_name, text_spec(data, candidates=hopeless)).json()["job_id"])
    assert job["status"] == "failed"
    assert job["error"].startswith("all 2 candidates failed: bow-knn: ValueError")
    assert job["model_version"] is None
    client = MlflowClient(mlflow_uri)
    assert client.get_run(job["run_id"]).info.status == "FAILED"
    assert client.search_model_versions(f"name = '{model_name}'") == []


STRONG = [{"featurizer": {"type": "tfidf"},
           "estimator": {"type": "logreg", "params": {"C": 10.0, "class_weight": "balanced", "max_iter": 1000}}}]


def pin_golden(registry_url: str, model_name: str, sha256: str) -> None:
    pinned = httpx.put(f"{registry_url}/models/{model_name}/golden-set", headers=ADMIN, timeout=30,
                       json={"sha256": sha256, "reason": "trainer test"})
    assert pinned.status_code == 200, pinned.text
    assert pinned.json()["status"] == "pinned"


def test_pinned_golden_set_scores_both_versions(trainer_url: str, registry_url: str, mlflow_uri: str,
                                                model_name: str, base_env: dict[str, str]) -> None:
    data = sms_subset(Path(base_env["DATASETS_DIR"]) / "inputs" / f"{model_name}.csv", rows=400, seed=11)
    spec = text_spec(data, threshold=0.5, candidates=STRONG)
    first = wait_job(trainer_url, submit(trainer_url, model_name, spec).json()["job_id"])
    assert first["status"] == "succeeded" and first["decision"] == "promoted", (first["reason"], first)
    proposed = httpx.get(f"{registry_url}/models/{model_name}/golden-set", timeout=10, headers=ADMIN).json()
    assert proposed["status"] == "proposed"

    # A proposed golden set is not used until an approver pins it.
    pin_golden(registry_url, model_name, proposed["sha256"])
    second = wait_job(trainer_url, submit(trainer_url, model_name, spec).json()["job_id"])
    assert second["status"] == "succeeded", second
    golden = second["golden"]
    assert golden["sha256"] == proposed["sha256"] and golden["error"] is None, golden
    assert set(golden["challenger"]) == set(golden["production"]) == set(second["metrics"]["challenger"])
    # The same data and candidate: both versions score the same on the golden set, production is kept.
    assert golden["challenger"]["f1_macro"] == pytest.approx(golden["production"]["f1_macro"])
    assert second["decision"] == "kept" and second["model_version"] == "2", second
    run = MlflowClient(mlflow_uri).get_run(second["run_id"])
    assert run.data.tags["mlops.golden_sha256"] == proposed["sha256"]
    assert run.data.metrics["golden_f1_macro"] == pytest.approx(golden["challenger"]["f1_macro"])


def test_a_golden_set_that_cannot_be_loaded_stops_automatic_promotion(trainer_url: str, registry_url: str,
                                                                       model_name: str,
                                                                       base_env: dict[str, str]) -> None:
    data = sms_subset(Path(base_env["DATASETS_DIR"]) / "inputs" / f"{model_name}.csv", rows=400, seed=12)
    missing = "0123456789abcdef" * 4  # in no store and in no MLflow run
    pin_golden(registry_url, model_name, missing)
    job = wait_job(trainer_url, submit(trainer_url, model_name,
                                       text_spec(data, threshold=0.5, candidates=STRONG)).json()["job_id"])
    assert job["status"] == "succeeded", job
    assert job["golden"]["sha256"] == missing and job["golden"]["challenger"] is None
    assert job["golden"]["error"].startswith(f"challenger: the golden set snapshot {missing} is neither")
    # The challenger meets the bar and there is no production: only the golden set keeps it from production.
    assert job["trainer_outcome"] == "promoted"
    assert job["decision"] == "pending_approval" and job["decision_id"] is not None, job
    assert "golden set" in job["reason"]
