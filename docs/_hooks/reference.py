"""MkDocs hook: generates the API and CLI reference pages at build time, so they cannot drift from the code.

API: each service's FastAPI app is built in process with ``create_app(settings)`` (nothing connects: the
lifespan does not run) and its ``openapi()`` document is rendered as Markdown, one page per service, together
with the routes the app serves but keeps out of the document (``/metrics``, ``/ui``, ...).

CLI: the ``mlops`` command is read from the client package. When it is a Typer app (``mlops_client.cli.app``)
every command is rendered from its Click tree; until then the page says where the CLI lives.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


@dataclass(frozen=True)
class Service:
    slug: str
    title: str
    app_module: str
    settings: str
    intro: str


SERVICES = (
    Service("predictor", "predictor", "predictor.main", "predictor.settings:PredictorSettings",
            "Serves the `production` version of each model it follows (port 8000)."),
    Service("registry-proxy", "registry-proxy", "registry_proxy.main", "registry_proxy.settings:RegistrySettings",
            "The governed door to MLflow's registry: gate, promote, rollback, canary, shadow, approvals, audit, "
            "DORA, principals and tokens (port 8001)."),
    Service("trainer-api", "trainer-api", "trainer.api", "trainer.settings:TrainerSettings",
            "Retrain jobs, datasets and the alert webhooks (port 8002)."),
)


def build_app(service: Service) -> Any:
    """The service's FastAPI app as ``create_app`` builds it, with test settings (no secret, no connection)."""
    module_name, class_name = service.settings.split(":")
    settings_class = getattr(importlib.import_module(module_name), class_name)
    create_app: Callable[[Any], Any] = importlib.import_module(service.app_module).create_app
    return create_app(settings_class(environment="test"))


def served_routes(app: Any) -> list[tuple[str, str, bool]]:
    """Every (METHOD, path, in the OpenAPI document) the app answers, included routers flattened."""
    try:  # FastAPI >= 0.16x keeps included routers lazily
        from fastapi.routing import iter_route_contexts
        items: list[Any] = list(iter_route_contexts(app.routes))
    except ImportError:  # pragma: no cover - older FastAPI
        items = list(app.routes)
    found = set()
    for item in items:
        route = getattr(item, "original_route", item)
        path = getattr(item, "path", None) or getattr(route, "path", None)
        methods = getattr(item, "methods", None) or getattr(route, "methods", None) or ()
        in_schema = bool(getattr(route, "include_in_schema", True))
        if path:
            found |= {(m, path, in_schema) for m in methods if m != "HEAD"}
    return sorted(found, key=lambda r: (r[1], r[0]))


def _cell(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|") if text not in (None, "") else ""


def _type(schema: dict[str, Any]) -> str:
    """A short, readable type for a JSON schema: refs by name, arrays of, unions with ``|``."""
    if not schema:
        return "any"
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#schema-{name.lower()})"
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " \\| ".join(_type(s) for s in schema[key])
    if "allOf" in schema and len(schema["allOf"]) == 1:
        return _type(schema["allOf"][0])
    kind = schema.get("type")
    if kind == "array":
        return f"array of {_type(schema.get('items', {}))}"
    if kind == "object" and "additionalProperties" in schema and isinstance(schema["additionalProperties"], dict):
        return f"object of {_type(schema['additionalProperties'])}"
    if "enum" in schema:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in schema["enum"])
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    return str(kind or "any")


def _body_schema(content: dict[str, Any]) -> Iterator[str]:
    for media_type, body in content.items():
        yield f"`{media_type}` {_type(body.get('schema', {}))}".rstrip()


def render_operation(method: str, path: str, op: dict[str, Any]) -> list[str]:
    lines = [f"### `{method.upper()} {path}`", ""]
    if op.get("summary"):
        lines += [f"**{op['summary']}**", ""]
    if op.get("description"):
        lines += [op["description"].strip(), ""]
    if op.get("security"):
        lines += ["Needs a bearer token (`Authorization: Bearer …`).", ""]
    params = op.get("parameters", [])
    if params:
        lines += ["| parameter | in | type | required | description |", "|---|---|---|---|---|"]
        for p in params:
            lines.append(f"| `{p['name']}` | {p['in']} | {_type(p.get('schema', {}))} | "
                         f"{'yes' if p.get('required') else 'no'} | {_cell(p.get('description'))} |")
        lines.append("")
    body = op.get("requestBody")
    if body:
        kinds = ", ".join(_body_schema(body.get("content", {})))
        lines += [f"Request body{' (required)' if body.get('required') else ''}: {kinds}", ""]
    responses = op.get("responses", {})
    if responses:
        lines += ["| status | meaning | body |", "|---|---|---|"]
        for status, answer in responses.items():
            kinds = "<br>".join(_body_schema(answer.get("content", {})))
            lines.append(f"| {status} | {_cell(answer.get('description'))} | {kinds} |")
        lines.append("")
    return lines


def render_schema(name: str, schema: dict[str, Any]) -> list[str]:
    lines = [f"### {name} {{ #schema-{name.lower()} }}", ""]
    if schema.get("description"):
        lines += [schema["description"].strip(), ""]
    props = schema.get("properties", {})
    if props:
        required = set(schema.get("required", []))
        lines += ["| field | type | required | description |", "|---|---|---|---|"]
        for field, sub in props.items():
            lines.append(f"| `{field}` | {_type(sub)} | {'yes' if field in required else 'no'} | "
                         f"{_cell(sub.get('description'))} |")
        lines.append("")
    elif "enum" in schema:
        lines += [f"One of {_type(schema)}.", ""]
    return lines


def render_service(service: Service, openapi: dict[str, Any], routes: list[tuple[str, str, bool]]) -> str:
    info = openapi.get("info", {})
    lines = [f"# {service.title} API", "",
             f"{service.intro} {info.get('description', '')}".strip(), "",
             f"Generated at build time from the app's OpenAPI document (version {info.get('version', '?')}); "
             "the running service serves the same document at `/openapi.json` and an explorer at `/docs`.", "",
             "## Routes", "", "| method | path | summary |", "|---|---|---|"]
    for method, path, in_schema in routes:
        op = openapi.get("paths", {}).get(path, {}).get(method.lower(), {}) if in_schema else {}
        lines.append(f"| {method} | `{path}` | {_cell(op.get('summary')) or '(not in the OpenAPI document)'} |")
    lines += [""]
    hidden = [(m, p) for m, p, in_schema in routes if not in_schema]
    if hidden:
        lines += ["Routes kept out of the OpenAPI document: "
                  + ", ".join(f"`{m} {p}`" for m, p in hidden) + ".", ""]
    lines += ["## Operations", ""]
    for path, ops in openapi.get("paths", {}).items():
        for method in METHODS:
            if method in ops:
                lines += render_operation(method, path, ops[method])
    schemas = openapi.get("components", {}).get("schemas", {})
    if schemas:
        lines += ["## Schemas", ""]
        for name in sorted(schemas):
            lines += render_schema(name, schemas[name])
    return "\n".join(lines) + "\n"


CLI_PENDING = """# CLI reference

The `mlops` command is the console script of the Python client package (`clients/python`, module
`mlops_client.cli`). It is being rebuilt there as a Typer app; this page is generated from that app at build
time as soon as it lands. Until then `mlops --help` (or `.venv/bin/mlops --help` in the project's virtualenv)
lists its commands, and the trainer's README shows examples.
"""


def render_cli() -> str:
    """The CLI reference from the Typer app's Click tree, or the note that it has not landed yet."""
    try:
        cli = importlib.import_module("mlops_client.cli")
    except ImportError:
        return CLI_PENDING
    typer_app = getattr(cli, "app", None)
    try:
        import typer
    except ImportError:  # pragma: no cover - typer is in the dev group
        return CLI_PENDING
    if not isinstance(typer_app, typer.Typer):
        return CLI_PENDING
    # Typer may carry its own copy of Click, so the tree is walked by duck typing, never isinstance(click.…).
    root = typer.main.get_command(typer_app)
    lines = ["# CLI reference", "",
             "Generated at build time from the Typer app `mlops_client.cli.app`. Every command accepts `--help`.",
             ""]

    def walk(command: Any, ctx: Any, depth: int) -> None:
        name = ctx.command_path
        lines.extend([f"{'#' * min(depth, 6)} `{name}`", ""])
        if command.help:
            lines.extend([command.help.strip(), ""])
        lines.extend(["```", command.get_usage(ctx).strip(), "```", ""])
        records = [p.get_help_record(ctx) for p in command.get_params(ctx)]
        rows = [r for r in records if r]
        if rows:
            lines.extend(["| option | description |", "|---|---|"])
            lines.extend(f"| `{_cell(opt)}` | {_cell(text)} |" for opt, text in rows)
            lines.append("")
        if hasattr(command, "list_commands"):
            for sub_name in command.list_commands(ctx):
                sub = command.get_command(ctx, sub_name)
                if sub is not None and not sub.hidden:
                    walk(sub, sub.context_class(sub, info_name=sub_name, parent=ctx), depth + 1)

    walk(root, root.context_class(root, info_name="mlops"), 2)
    return "\n".join(lines) + "\n"


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for service in SERVICES:
        app = build_app(service)
        page = render_service(service, app.openapi(), served_routes(app))
        files.append(File.generated(config, f"reference/api/{service.slug}.md", content=page))
    files.append(File.generated(config, "reference/cli.md", content=render_cli()))
    return files
