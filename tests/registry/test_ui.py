"""The /ui page in headless Chromium: a real click approves a decision and the page shows the new production."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
from mlflow.tracking import MlflowClient

from tests.registry.helpers import SERVICE, Jobs, aliases
from tests.support.auth import ADMIN_TOKEN

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev dependency group")

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="Debian's chromium is not installed (.ci/run installs it)")


@pytest.fixture()
def page():
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield browser.new_page()
        finally:
            browser.close()


def test_page_lists_models_and_renders_without_token(api: httpx.Client, mlflow_client: MlflowClient,
                                                      tiny_model_id: str, model_name: str) -> None:
    api.post(f"/models/{model_name}/gate", json=Jobs(mlflow_client, tiny_model_id).report(),
             headers=SERVICE).raise_for_status()
    html = api.get("/ui")
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert f'data-model="{model_name}"' in html.text
    assert "Recent audit log" in html.text


def test_click_approve_promotes(page, api: httpx.Client, mlflow_client: MlflowClient, tiny_model_id: str,
                                model_name: str, registry_url: str) -> None:
    jobs = Jobs(mlflow_client, tiny_model_id)
    first = api.post(f"/models/{model_name}/gate", json=jobs.report(0.9), headers=SERVICE).json()
    assert first["outcome"] == "promoted"
    v1 = first["version"]
    # Production now scores 0.5 on the new split and the challenger 0.7: neither meets 0.8, a human decides.
    answer = api.post(f"/models/{model_name}/gate", headers=SERVICE, json=jobs.report(
        0.7, production_version=v1, production_score=0.5)).json()
    assert answer["outcome"] == "pending_approval"
    v2, decision = answer["version"], answer["decision_id"]

    page.goto(f"{registry_url}/ui")
    row = page.locator(f"#decision-{decision}")
    assert "0.7" in row.inner_text()
    section = page.locator(f'section[data-model="{model_name}"]')
    assert section.locator(".production-version").inner_text() == v1

    # Without a token the page asks for one; dismissing the prompt leaves everything as it was.
    page.once("dialog", lambda dialog: dialog.dismiss())
    row.get_by_role("button", name="Approve").click()
    page.wait_for_function("document.getElementById('status').textContent.includes('token')")
    assert aliases(mlflow_client, model_name)["production"] == v1

    page.fill("#token", ADMIN_TOKEN)
    page.fill(f"#comment-{decision}", "looks fine")
    with page.expect_navigation():
        row.get_by_role("button", name="Approve").click()
    section = page.locator(f'section[data-model="{model_name}"]')
    assert section.locator(".production-version").inner_text() == v2
    assert page.locator(f"#decision-{decision}").count() == 0
    assert aliases(mlflow_client, model_name)["production"] == v2
    approved = api.get(f"/decisions/{decision}").json()
    assert approved["status"] == "approved" and approved["comment"] == "looks fine"
    assert approved["decided_by"] == "admin"
