"""The docs site: `mkdocs build --strict` succeeds offline, every page in the nav is built, the generated API
pages list every route each service's app serves, the CLI page every command, and every alert rule has its
runbook page.

The site is built once per module in a temp dir, by the real `mkdocs` of the virtualenv (strict: a broken
link, a missing anchor or a nav entry without a page fails the build). The routes are read from the FastAPI
apps themselves in separate processes, while the site builds, the way tests/faults does it, not from the
hook that renders the pages.
"""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import processes as p

REPO = Path(__file__).resolve().parents[2]
MKDOCS = Path(sys.executable).parent / "mkdocs"
RULES = REPO / "infra" / "prometheus" / "rules" / "mlops-alerts.yml"
APPS = {"predictor": "predictor.main", "registry-proxy": "registry_proxy.main", "trainer-api": "trainer.api"}
SETTINGS = {"predictor": "predictor.settings:PredictorSettings",
            "registry-proxy": "registry_proxy.settings:RegistrySettings",
            "trainer-api": "trainer.settings:TrainerSettings"}

ROUTES_SCRIPT = """
import json, sys
from importlib import import_module
module, settings = sys.argv[1], sys.argv[2]
settings_module, settings_class = settings.split(":")
app = import_module(module).create_app(getattr(import_module(settings_module), settings_class)(environment="test"))
try:  # FastAPI >= 0.16x keeps included routers lazily; this flattens them
    from fastapi.routing import iter_route_contexts
    items = list(iter_route_contexts(app.routes))
except ImportError:
    items = list(app.routes)
routes = set()
for item in items:
    route = getattr(item, "original_route", item)
    path = getattr(item, "path", None) or route.path
    for method in getattr(item, "methods", None) or getattr(route, "methods", None) or []:
        if method != "HEAD":
            routes.add((method, path))
print(json.dumps(sorted(routes)))
"""


def kebab(name: str) -> str:
    """PredictorLatencyP99 → predictor-latency-p99: the runbook page of an alert."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", name).lower()


def nav_pages(nav: list[Any]) -> Iterator[str]:
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        if isinstance(value, list):
            yield from nav_pages(value)
        else:
            yield value


def mkdocs_config() -> dict[str, Any]:
    class Loader(yaml.SafeLoader):
        pass

    # mkdocs.yml may use !ENV / !relative tags: read them as plain values.
    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    config: dict[str, Any] = yaml.load((REPO / "mkdocs.yml").read_text(), Loader=Loader)
    return config


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict[str, list[tuple[str, str]]]]:
    """(site dir, build log, routes per service): the strict build and the route listings, side by side."""
    site = tmp_path_factory.mktemp("site")
    env = {**p.inherited_env(), "NO_MKDOCS_2_WARNING": "1",
           # Offline: a build that tried to reach the network fails at once rather than hang.
           "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": "",
           "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "no_proxy": ""}
    build = subprocess.Popen([str(MKDOCS), "build", "--strict", "--site-dir", str(site)], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    listings = {name: subprocess.Popen([sys.executable, "-c", ROUTES_SCRIPT, module, SETTINGS[name]], cwd=REPO,
                                       env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for name, module in APPS.items()}
    routes = {}
    for name, proc in listings.items():
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"listing the routes of {name} failed:\n{err[-3000:]}"
        routes[name] = [tuple(r) for r in json.loads(out.strip().splitlines()[-1])]
    log, _ = build.communicate(timeout=900)
    assert build.returncode == 0, f"mkdocs build --strict failed:\n{log[-5000:]}"
    return site, log, routes


def page(site: Path, src: str) -> Path:
    """The built file of a source page (the offline plugin turns off directory URLs: a.md → a.html)."""
    return site / (src.removesuffix(".md") + ".html")


def test_the_strict_build_succeeds_and_loads_nothing_from_the_network(built: tuple[Path, str, Any]) -> None:
    site, log, _ = built
    assert "WARNING" not in log, log
    assert (site / "index.html").is_file()
    for built_page in site.rglob("*.html"):
        text = built_page.read_text()
        external = re.findall(r'<(?:script|link|img)[^>]+(?:src|href)="(https?://[^"]+)"', text)
        assert not external, f"{built_page.relative_to(site)} loads {external} from the network"
        assert "fonts.googleapis.com" not in text


def test_every_page_in_the_nav_is_built(built: tuple[Path, str, Any]) -> None:
    site, _, _ = built
    pages = list(nav_pages(mkdocs_config()["nav"]))
    assert len(pages) >= 25
    missing = [src for src in pages if not page(site, src).is_file()]
    assert not missing, f"nav entries without a built page: {missing}"
    sources = {str(md.relative_to(REPO / "docs")) for md in (REPO / "docs").rglob("*.md")}
    assert sources <= set(pages), f"pages left out of the nav: {sorted(sources - set(pages))}"


@pytest.mark.parametrize("service", list(APPS))
def test_the_api_page_lists_every_route_of_the_app(built: tuple[Path, str, Any], service: str) -> None:
    site, _, routes = built
    text = html.unescape(page(site, f"reference/api/{service}.md").read_text())
    assert len(routes[service]) >= 10
    missing = [(method, path) for method, path in routes[service]
               if not re.search(rf"<td>{method}</td>\s*<td><code>{re.escape(path)}</code></td>", text)]
    assert not missing, f"routes of {service} missing from its API page: {missing}"


def test_the_cli_page_lists_every_command(built: tuple[Path, str, Any]) -> None:
    site, _, _ = built
    text = page(site, "reference/cli.md").read_text()
    typer = pytest.importorskip("typer")
    cli = pytest.importorskip("mlops_client.cli")
    if not isinstance(getattr(cli, "app", None), typer.Typer):
        assert "mlops_client.cli" in text, "until the Typer CLI lands, the page says where the CLI lives"
        return
    paths = []

    def walk(command: Any, prefix: str) -> None:  # Typer may carry its own Click: duck typing, no isinstance
        paths.append(prefix)
        ctx = command.context_class(command, info_name=prefix.rsplit(" ", 1)[-1])
        for name in getattr(command, "list_commands", lambda _: [])(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                walk(sub, f"{prefix} {name}")

    walk(typer.main.get_command(cli.app), "mlops")
    assert len(paths) > 10
    missing = [path for path in paths if f"<code>{path}</code>" not in text]
    assert not missing, f"commands missing from the CLI page: {missing}"


def test_every_alert_has_its_runbook_page(built: tuple[Path, str, Any]) -> None:
    site, _, _ = built
    rules = alert_rules()
    assert len(rules) >= 8
    nav = set(nav_pages(mkdocs_config()["nav"]))
    index = page(site, "runbooks/index.md").read_text()
    for rule in rules:
        src = f"runbooks/{kebab(rule['alert'])}.md"
        assert src in nav, f"{rule['alert']} has no runbook in the nav ({src})"
        text = (REPO / "docs" / src).read_text()
        assert text.startswith(f"# {rule['alert']}\n"), f"{src} is not {rule['alert']}'s page"
        assert "**Check**" in text and "**Do**" in text, f"{src} says what to check and what to do"
        assert f'href="{kebab(rule["alert"])}.html"' in index, f"the runbook index does not link {src}"
        url = rule.get("annotations", {}).get("runbook_url")
        if url:
            assert re.search(rf"/runbooks/{kebab(rule['alert'])}(\.html|/)?$", url), \
                f"{rule['alert']}'s runbook_url {url} does not point at {src}"
