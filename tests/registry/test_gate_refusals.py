"""Gate reports registry-proxy cannot act on are refused with a 4xx that says why, before anything is created:
no registered model, no version, no policy, no audit row."""

from __future__ import annotations

import httpx
from mlflow.tracking import MlflowClient

from tests.registry.helpers import SERVICE, Jobs


def nothing_left(api: httpx.Client, mlflow_client: MlflowClient, model_name: str) -> None:
    assert mlflow_client.search_registered_models(filter_string=f"name = '{model_name}'") == []
    assert mlflow_client.search_model_versions(f"name = '{model_name}'") == []
    assert api.get("/audit", params={"model": model_name}).json()["items"] == []
    assert api.get(f"/models/{model_name}/policy").status_code == 404  # the spec's policy was not seeded


def test_a_model_uri_that_names_no_logged_model_is_refused(api: httpx.Client, mlflow_client: MlflowClient,
                                                           tiny_model_id: str, model_name: str) -> None:
    jobs = Jobs(mlflow_client, tiny_model_id)
    url = f"/models/{model_name}/gate"
    body = jobs.report(0.9)
    # A logged model that does not exist, a run that logged no model, and something that is no model URI at all.
    for uri in ("models:/m-" + "0" * 32, f"runs:/{body['run_id']}/model", "file:///etc/passwd"):
        refused = api.post(url, json={**body, "model_uri": uri}, headers=SERVICE)
        assert refused.status_code == 422, (uri, refused.status_code, refused.text)
        assert uri in refused.json()["detail"], refused.text
    no_run = api.post(url, json={**body, "run_id": "0" * 32}, headers=SERVICE)
    assert no_run.status_code == 422 and "0" * 32 in no_run.json()["detail"], no_run.text
    nothing_left(api, mlflow_client, model_name)

    # The same job with its real logged model goes through (nothing of the refusals was kept for its job id).
    accepted = api.post(url, json=body, headers=SERVICE)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["outcome"] == "promoted"
    assert [v.version for v in mlflow_client.search_model_versions(f"name = '{model_name}'")] == ["1"]


def test_a_job_id_that_cannot_be_searched_for_is_refused(api: httpx.Client, mlflow_client: MlflowClient,
                                                         tiny_model_id: str, model_name: str) -> None:
    """The job id is how a repeated report finds its version again (an MLflow tag search): one holding a quote
    would break the search, so it is refused up front."""
    body = Jobs(mlflow_client, tiny_model_id).report(0.9)
    for job_id in ("job' or tags.`mlops.job_id` != '", 'a"b', " leading-space", "a\\b"):
        refused = api.post(f"/models/{model_name}/gate", json={**body, "job_id": job_id}, headers=SERVICE)
        assert refused.status_code == 422, (job_id, refused.status_code, refused.text)
        assert "job_id" in refused.json()["detail"], refused.text
    nothing_left(api, mlflow_client, model_name)
