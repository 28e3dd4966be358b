"""The /ui page in headless Chromium: real clicks approve a decision, promote a version and roll it back, and the
page shows the new production; a viewer's click shows the server's refusal; the versions' metrics are compared;
the audit table is filtered by model and action; each version's confusion matrix from its MLflow run is shown in the
comparison. Screenshots of the click-through are kept with the test logs."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import httpx
import pytest
from fastapi.testclient import TestClient
from mlflow.tracking import MlflowClient

from mlops_common.auth import Principal
from mlops_common.errors import NotFound, Unavailable
from registry_proxy.main import create_app
from registry_proxy.settings import RegistrySettings
from tests.registry.conftest import Register
from tests.registry.helpers import SERVICE, Jobs, aliases
from tests.support.auth import ADMIN, ADMIN_TOKEN, bearer, principal_token
from tests.support.registry import add_version

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev dependency group")

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="Debian's chromium is not installed (.ci/run installs it)")


@pytest.fixture()
def page() -> Iterator[Page]:
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


def test_click_approve_promotes(page: Page, api: httpx.Client, mlflow_client: MlflowClient, tiny_model_id: str,
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


PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def screenshots(log_dir: Path) -> Path:
    """Where the click-through's screenshots go: kept with the run's artifacts (UI_SCREENSHOTS_DIR in CI)."""
    path = Path(os.environ.get("UI_SCREENSHOTS_DIR") or log_dir / "screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _shot(page: Page, directory: Path, name: str) -> Path:
    path = directory / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def _two_versions(api: httpx.Client, mlflow_client: MlflowClient, tiny_model_id: str, register: Register,
                  model_name: str) -> tuple[str, str]:
    """v1 promoted by the gate (f1_macro 0.9, so the policy compares f1_macro), v2 registered beside it with a
    run of its own (f1_macro 0.75, accuracy 0.8) and no gate verdict: a candidate an approver may promote."""
    first = api.post(f"/models/{model_name}/gate", json=Jobs(mlflow_client, tiny_model_id).report(0.9),
                     headers=SERVICE).json()
    assert first["outcome"] == "promoted"
    return first["version"], register(model_name, f1_macro=0.75, accuracy=0.8)


def _served(mlflow_client: MlflowClient, model_name: str) -> dict[str, str]:
    """The aliases a promotion and a rollback move (the gate also keeps a ``challenger`` alias)."""
    return {k: v for k, v in aliases(mlflow_client, model_name).items() if k in ("production", "previous")}


def _production(page: Page, model_name: str) -> str:
    return str(page.locator(f'section[data-model="{model_name}"] .production-version').inner_text())


def test_click_promote_then_roll_back(page: Page, api: httpx.Client, mlflow_client: MlflowClient, tiny_model_id: str,
                                     register: Register, model_name: str, registry_url: str,
                                     screenshots: Path) -> None:
    v1, v2 = _two_versions(api, mlflow_client, tiny_model_id, register, model_name)
    page.goto(f"{registry_url}/ui")
    section = page.locator(f'section[data-model="{model_name}"]')
    assert _production(page, model_name) == v1
    # Production itself has no Promote button, and without a `previous` alias there is nothing to roll back to.
    assert section.locator(f'tr[data-version="{v1}"] button[data-promote]').count() == 0
    assert section.locator("button[data-rollback]").count() == 0
    shots = [_shot(page, screenshots, "1-before-promote")]

    page.fill("#token", ADMIN_TOKEN)
    with page.expect_navigation():
        section.locator(f'tr[data-version="{v2}"]').get_by_role("button", name="Promote").click()
    assert _production(page, model_name) == v2
    assert _served(mlflow_client, model_name) == {"production": v2, "previous": v1}
    assert section.locator(f'tr[data-version="{v2}"] button[data-promote]').count() == 0
    assert section.locator(f'tr[data-version="{v1}"] .alias-previous').count() == 1
    shots.append(_shot(page, screenshots, "2-after-promote"))

    with page.expect_navigation():
        section.get_by_role("button", name=f"Roll back to v{v1}").click()
    assert _production(page, model_name) == v1
    assert _served(mlflow_client, model_name) == {"production": v1}
    assert section.locator("button[data-rollback]").count() == 0
    shots.append(_shot(page, screenshots, "3-after-rollback"))

    done = api.get("/audit", params={"model": model_name}).json()["items"]
    assert [(e["action"], e["actor"], e["to_version"]) for e in done[:2]] == [("rollback", "admin", v1),
                                                                              ("promote", "admin", v2)]
    for shot in shots:
        data = shot.read_bytes()
        assert len(data) > len(PNG) and data.startswith(PNG), shot


def test_viewer_sees_the_refusal_and_nothing_changes(page: Page, api: httpx.Client, mlflow_client: MlflowClient,
                                                     tiny_model_id: str, register: Register, model_name: str,
                                                     registry_url: str) -> None:
    v1, v2 = _two_versions(api, mlflow_client, tiny_model_id, register, model_name)
    v3 = register(model_name, f1_macro=0.7)
    api.post(f"/models/{model_name}/promote", json={"version": v2}, headers=ADMIN).raise_for_status()
    _, token = principal_token(registry_url, "viewer")
    refusal = api.post(f"/models/{model_name}/promote", json={"version": v3}, headers=bearer(token))
    assert refusal.status_code == 403
    reason = refusal.json()["detail"]

    page.goto(f"{registry_url}/ui")
    page.fill("#token", token)
    section = page.locator(f'section[data-model="{model_name}"]')
    section.locator(f'tr[data-version="{v3}"]').get_by_role("button", name="Promote").click()
    page.wait_for_function("document.getElementById('status').textContent.startsWith('Could not promote')")
    assert ": 403 " in page.inner_text("#status") and reason in page.inner_text("#status")
    section.get_by_role("button", name=f"Roll back to v{v1}").click()
    page.wait_for_function("document.getElementById('status').textContent.startsWith('Could not roll back')")
    assert ": 403 " in page.inner_text("#status") and reason in page.inner_text("#status")
    assert _served(mlflow_client, model_name) == {"production": v2, "previous": v1}
    assert _production(page, model_name) == v2
    assert [e["action"] for e in api.get("/audit", params={"model": model_name}).json()["items"]
            ].count("rollback") == 0


def test_comparison_table_and_gate_chart(page: Page, api: httpx.Client, mlflow_client: MlflowClient, tiny_model_id: str,
                                         register: Register, model_name: str, registry_url: str) -> None:
    v1, v2 = _two_versions(api, mlflow_client, tiny_model_id, register, model_name)
    # A version whose run is gone: the page still renders, with "-" for its metrics.
    gone = add_version(mlflow_client, mlflow_client.tracking_uri, model_name, f"models:/{tiny_model_id}",
                       uuid.uuid4().hex, tiny_model_id)
    page.goto(f"{registry_url}/ui")
    table = page.locator(f'table.compare[data-model="{model_name}"]')

    def cell(metric: str, version: str) -> str:
        return str(table.locator(f'tr[data-metric="{metric}"] td[data-version="{version}"]').inner_text())

    assert (cell("f1_macro", v1), cell("f1_macro", v2), cell("f1_macro", gone)) == ("0.9", "0.75", "-")
    assert (cell("accuracy", v1), cell("accuracy", v2)) == ("-", "0.8")
    # The gate metric (the policy's f1_macro) leads the table and is the one charted.
    assert table.locator("tr[data-metric]").first.get_attribute("data-metric") == "f1_macro"
    chart = page.locator(f'svg.gate-chart[data-model="{model_name}"]')
    assert chart.get_attribute("data-metric") == "f1_macro"
    bars = {v: float(chart.locator(f'rect[data-version="{v}"]').get_attribute("height") or 0) for v in (v1, v2)}
    assert bars[v1] > bars[v2] > 0
    assert chart.locator(f'rect[data-version="{gone}"]').count() == 0


def test_audit_filter_narrows_to_one_model(page: Page, api: httpx.Client, mlflow_client: MlflowClient,
                                           tiny_model_id: str, registry_url: str) -> None:
    ours, other = f"test-{uuid.uuid4().hex[:8]}", f"test-{uuid.uuid4().hex[:8]}"
    for name in (ours, other):
        assert api.post(f"/models/{name}/gate", json=Jobs(mlflow_client, tiny_model_id).report(0.9),
                        headers=SERVICE).json()["outcome"] == "promoted"
    page.goto(f"{registry_url}/ui")
    models_shown = {row.get_attribute("data-model") for row in page.locator("tr.audit").all()}
    assert {ours, other} <= models_shown

    page.fill("#audit-model", ours)
    with page.expect_navigation():
        page.locator("#audit-filter").get_by_role("button", name="Filter").click()
    assert f"model={ours}" in page.url
    rows = page.locator("tr.audit")
    assert rows.count() >= 2  # at least the policy seed, the gate and the promotion
    assert {row.get_attribute("data-model") for row in rows.all()} == {ours}
    assert page.input_value("#audit-model") == ours

    page.goto(f"{registry_url}/ui?model={ours}&action=promote")
    assert [(row.get_attribute("data-model"), row.get_attribute("data-action"))
            for row in page.locator("tr.audit").all()] == [(ours, "promote")]
    page.goto(f"{registry_url}/ui?model={ours}&action=rollback")
    assert page.locator("tr.audit").count() == 0 and page.locator("#no-audit").is_visible()


def _log_confusion_matrix(mlflow_client: MlflowClient, model_name: str, version: str) -> None:
    """Logs in the version's run what the trainer logs in a classifier's: its confusion matrix figure."""
    from trainer.evaluation import confusion_figure

    run_id = mlflow_client.get_model_version(model_name, version).run_id
    assert run_id
    figure = confusion_figure(["ham", "spam", "spam", "ham"], ["ham", "spam", "ham", "ham"], f"{model_name} v{version}")
    mlflow_client.log_figure(run_id, figure, "plots/confusion_matrix.png")


def test_each_version_shows_its_confusion_matrix(page: Page, api: httpx.Client, mlflow_client: MlflowClient,
                                                 tiny_model_id: str, register: Register, model_name: str,
                                                 registry_url: str, screenshots: Path) -> None:
    v1, v2 = _two_versions(api, mlflow_client, tiny_model_id, register, model_name)
    _log_confusion_matrix(mlflow_client, model_name, v2)

    _, token = principal_token(registry_url, "viewer")
    for headers in ({}, bearer(token)):  # reads are open in the test stack; a viewer's token is accepted too
        shown = api.get(f"/ui/plots/{model_name}/versions/{v2}", headers=headers)
        assert shown.status_code == 200, shown.text
        assert shown.headers["content-type"] == "image/png" and shown.content.startswith(PNG)
        assert shown.headers["cache-control"] == "private, max-age=300"
    assert api.get(f"/ui/plots/{model_name}/versions/{v2}", headers=bearer("not-a-token")).status_code == 401
    for version in (v1, "999", "abc"):  # no plot in v1's run; no such versions
        missing = api.get(f"/ui/plots/{model_name}/versions/{version}")
        assert missing.status_code == 404, missing.text
        assert missing.headers["content-type"] == "application/json" and f"{version}" in missing.json()["detail"]
    assert api.get(f"/ui/plots/no-such-{model_name}/versions/1").status_code == 404

    page.goto(f"{registry_url}/ui")
    plots = page.locator(f'table.compare[data-model="{model_name}"] tr.plots')
    image = plots.locator(f'td[data-version="{v2}"] img')
    assert image.get_attribute("alt") == f"v{v2} confusion matrix or residual plot"
    image.scroll_into_view_if_needed()  # loaded lazily
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    # v1's run holds no plot: its cell falls back to "-" instead of a broken image.
    page.wait_for_function("cell => cell.querySelector('img') === null",
                           arg=plots.locator(f'td[data-version="{v1}"]').element_handle())
    assert plots.locator(f'td[data-version="{v1}"]').inner_text() == "-"
    plots.screenshot(path=str(screenshots / "4-version-plots.png"))


class _PlotRegistry:
    """What the plot route reads, without MLflow: version 1 has a plot, version 2 none; MLflow down for "down"."""

    def get_version(self, name: str, version: str) -> SimpleNamespace:
        if name == "down":
            raise Unavailable("MLflow unavailable (version 1 of model 'down'): connection refused")
        if version not in ("1", "2"):
            raise NotFound(f"version {version} of model {name!r} not found")
        return SimpleNamespace(run_id=f"run-{version}")

    def run_plot(self, run_id: str) -> bytes | None:
        return PNG + b"rest" if run_id == "run-1" else None


class _Tokens:
    async def principal(self, token: str) -> Principal | None:
        return Principal(name="vic", role="viewer") if token == "viewer-token" else None


def test_plots_need_a_read_token_when_reads_are_closed() -> None:
    """As in production (AUTH_OPEN_READS=false): the plot is refused without a token, and the page's cookie
    (what the browser sends for the page's images) or a bearer header opens it; MLflow down is a 503."""
    app = create_app(RegistrySettings(environment="test"))
    app.state.authenticator = _Tokens()
    app.state.auth_open_reads = False
    app.state.ctx = SimpleNamespace(registry=_PlotRegistry())
    client = TestClient(app, raise_server_exceptions=False)

    refused = client.get("/ui/plots/m/versions/1")
    assert refused.status_code == 401 and refused.headers["www-authenticate"].lower().startswith("bearer")
    assert refused.headers["content-type"] == "application/json" and refused.json()["detail"]
    assert client.get("/ui/plots/m/versions/1", headers={"Authorization": "Bearer wrong"}).status_code == 401
    by_header = client.get("/ui/plots/m/versions/1", headers={"Authorization": "Bearer viewer-token"})
    assert by_header.status_code == 200 and by_header.content.startswith(PNG)
    client.cookies.set("registry_token", "viewer-token")
    assert client.get("/ui/plots/m/versions/1").content.startswith(PNG)
    assert client.get("/ui/plots/m/versions/2").status_code == 404
    assert client.get("/ui/plots/m/versions/3").status_code == 404
    down = client.get("/ui/plots/down/versions/1")
    assert down.status_code == 503 and "MLflow unavailable" in down.json()["detail"]
