"""`mlops`: every operation of the stack from a terminal, on :class:`mlops_client.Client` (Typer + Rich).

    mlops predict "Lunch tomorrow?" --model sms-spam       mlops retrain sms-spam --set metric.threshold=0.9
    mlops jobs --status failed                             mlops job JOB_ID --follow
    mlops datasets upload fares.csv                        mlops models show sms-spam
    mlops decisions --status pending                       mlops approve 12 --comment "checked"
    mlops promote sms-spam 3 --reason "..."                mlops rollback sms-spam --reason "..."
    mlops canary start sms-spam 4 --steps 10,50,100        mlops canary status sms-spam
    mlops shadow start sms-spam 4 --share 20               mlops shadow status sms-spam
    mlops audit --model sms-spam                           mlops dora sms-spam
    mlops principals create alice approver                 mlops principals token alice

Tables for people, ``--json`` for scripts. Exit codes: 0 ok, 1 the server refused (a 4xx: the reason is
printed), 2 usage, 3 a service unavailable, failing or too slow (after the retries), 4 a retrain job failed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from mlops_client import Client
from mlops_client.errors import (
    AuthenticationError,
    JobFailedError,
    MlopsError,
    RefusedError,
)
from mlops_client.models import Job

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_JOB_FAILED = 0, 1, 2, 3, 4
EPILOG = ("Exit codes: 0 ok · 1 the server refused (4xx, reason printed) · 2 usage · 3 a service unavailable, "
          "failing or too slow · 4 a retrain job failed. Token: --token, else $MLOPS_TOKEN, else "
          "$REGISTRY_ADMIN_TOKEN.")

app = typer.Typer(name="mlops", help="Predict, retrain, govern and audit models on the mlops stack.",
                  epilog=EPILOG, no_args_is_help=True, rich_markup_mode="rich")
datasets_app = typer.Typer(help="Upload, list and show training datasets (trainer-api).", no_args_is_help=True)
models_app = typer.Typer(help="Registered models and their versions (registry-proxy).", no_args_is_help=True)
canary_app = typer.Typer(help="Canary rollouts: start, status, pause, resume, abort, approve.", no_args_is_help=True)
shadow_app = typer.Typer(help="Shadow periods: mirror live requests to a version and compare, then stop.",
                         no_args_is_help=True)
principals_app = typer.Typer(help="Principals and their API tokens (admins).", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")
app.add_typer(models_app, name="models")
app.add_typer(canary_app, name="canary")
app.add_typer(shadow_app, name="shadow")
app.add_typer(principals_app, name="principals")

out = Console(soft_wrap=False)
err = Console(stderr=True)

Json = Annotated[bool, typer.Option("--json", help="Print the answer as JSON (for scripts).")]
Reason = Annotated[str, typer.Option("--reason", "-r", help="Why (kept in the audit log).")]


@dataclass
class Options:
    token: str | None
    predictor_url: str | None
    trainer_url: str | None
    registry_url: str | None
    timeout: float
    retries: int


@app.callback()
def options(
    ctx: typer.Context,
    token: Annotated[str | None, typer.Option(
        envvar="MLOPS_TOKEN", show_default=False,
        help="API token (default $MLOPS_TOKEN, else $REGISTRY_ADMIN_TOKEN). Prefer the variable: a token on "
             "the command line shows in the process list.")] = None,
    predictor_url: Annotated[str | None, typer.Option(
        envvar="MLOPS_PREDICTOR_URL", help="predictor base URL [default: http://127.0.0.1:8000]")] = None,
    trainer_url: Annotated[str | None, typer.Option(
        envvar="MLOPS_TRAINER_URL", help="trainer-api base URL [default: http://127.0.0.1:8002]")] = None,
    registry_url: Annotated[str | None, typer.Option(
        envvar="MLOPS_REGISTRY_URL", help="registry-proxy base URL [default: http://127.0.0.1:8001]")] = None,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds to wait for each answer.")] = 30.0,
    retries: Annotated[int, typer.Option(min=0, help="Retries of idempotent calls on 503 or connection "
                                                     "errors.")] = 3,
) -> None:
    ctx.obj = Options(token, predictor_url, trainer_url, registry_url, timeout, retries)


def fail(message: str, code: int) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def connect(ctx: typer.Context) -> Iterator[Client]:
    """A client from the global options; an :class:`MlopsError` becomes its message and exit code."""
    opts: Options = ctx.obj  # set by the callback, inherited by the groups' commands
    try:
        with Client(token=opts.token, predictor_url=opts.predictor_url, trainer_url=opts.trainer_url,
                    registry_url=opts.registry_url, timeout=opts.timeout, retries=opts.retries) as client:
            yield client
    except JobFailedError as exc:
        fail(exc.message, EXIT_JOB_FAILED)
    except AuthenticationError as exc:
        fail(f"{exc.message} (set MLOPS_TOKEN to your API token, or pass --token)", EXIT_REFUSED)
    except RefusedError as exc:
        fail(exc.message, EXIT_REFUSED)
    except MlopsError as exc:
        fail(exc.message, EXIT_UNAVAILABLE)


def dump(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [dump(v) for v in value]
    return value


def emit_json(value: Any) -> None:
    typer.echo(json.dumps(dump(value), indent=2, default=str))


def table(*columns: str, title: str | None = None) -> Table:
    grid = Table(title=title, header_style="bold", title_justify="left")
    for column in columns:
        grid.add_column(column, overflow="fold")
    return grid


def text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def when(value: str | None) -> str:
    return value[:19].replace("T", " ") if value else "-"


def show(value: Any, as_json: bool, render: Any) -> None:
    if as_json:
        emit_json(value)
    else:
        render(value)


# predictor


def parse_instance(raw: str) -> Any:
    """A text, or a record given as a JSON object (tabular models)."""
    if raw.lstrip().startswith("{"):
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise typer.BadParameter(f"not a JSON object: {exc}") from exc
    return raw


@app.command()
def predict(
    ctx: typer.Context,
    instances: Annotated[list[str] | None, typer.Argument(
        help="Texts, or records as JSON objects ('{\"distance_km\": 3.2}').", show_default=False)] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="The model (default: the predictor's "
                                                                    "own).")] = None,
    version: Annotated[str | None, typer.Option("--version", "-v", help="A version of --model instead of "
                                                                        "production.")] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", exists=True, dir_okay=False,
                                              help="A JSON list of instances.")] = None,
    probabilities: Annotated[bool, typer.Option("--probabilities", "-p", help="Also each class's "
                                                                              "probability.")] = False,
    as_json: Json = False,
) -> None:
    """Score instances with a model's production version (or --version)."""
    items: list[Any] = [parse_instance(i) for i in instances or []]
    if file is not None:
        loaded = json.loads(file.read_text())
        if not isinstance(loaded, list):
            raise typer.BadParameter("the file must hold a JSON list of instances", param_hint="--file")
        items.extend(loaded)
    if not items:
        raise typer.BadParameter("give instances as arguments or --file", param_hint="INSTANCES")
    if version is not None and model is None:
        raise typer.BadParameter("--version needs --model", param_hint="--version")
    with connect(ctx) as client:
        answer = client.predict(items, model=model, version=version, probabilities=probabilities)
    if as_json:
        return emit_json(answer)
    grid = table("#", "instance", "prediction", *(["probabilities"] if answer.probabilities else []),
                 title=f"{answer.model_name} v{answer.model_version} · request {answer.request_id}")
    for i, (item, prediction) in enumerate(zip(items, answer.predictions, strict=False)):
        row = [str(i), item if isinstance(item, str) else json.dumps(item), text(prediction)]
        if answer.probabilities:
            row.append(", ".join(f"{k}={v:.3f}" for k, v in answer.probabilities[i].items()))
        grid.add_row(*row)
    out.print(grid)


@app.command()
def feedback(
    ctx: typer.Context,
    request_id: Annotated[str, typer.Argument(help="The request_id of the prediction.")],
    label: Annotated[str | None, typer.Option(help="The true class (classifiers).")] = None,
    value: Annotated[float | None, typer.Option(help="The true value (regressors).")] = None,
    index: Annotated[int | None, typer.Option(min=0, help="Which instance of the request.")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="The model that predicted.")] = None,
    as_json: Json = False,
) -> None:
    """Send the ground truth of an earlier prediction."""
    if (label is None) == (value is None):
        raise typer.BadParameter("give --label or --value", param_hint="--label/--value")
    with connect(ctx) as client:
        answer = client.feedback(request_id, label=label, value=value, index=index, model=model)
    if as_json:
        return emit_json(answer)
    live = (f"live accuracy {text(answer.live_accuracy)}" if answer.live_accuracy is not None
            else f"live MAE {text(answer.live_mae)}")
    out.print(f"recorded for v{answer.model_version}: predicted {text(answer.prediction)}"
              f"{'' if answer.correct is None else (' (correct)' if answer.correct else ' (wrong)')}; "
              f"{live} over {answer.window}")


# trainer


def set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise typer.BadParameter(f"{dotted}: {key} is not a block", param_hint="--set")
    node[leaf] = value


def scalar(raw: str) -> Any:
    """``0.9`` → 0.9, ``true`` → True, ``[1, 2]`` → a list; anything else stays a string."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def read_spec(path: Path) -> dict[str, Any]:
    raw = path.read_text()
    if path.suffix == ".json":
        loaded = json.loads(raw)
    else:
        try:
            import yaml
        except ImportError as exc:  # PyYAML is optional: JSON works without it
            raise typer.BadParameter("YAML needs PyYAML (pip install pyyaml); or give JSON", param_hint="--spec") \
                from exc
        loaded = yaml.safe_load(raw)
    if not isinstance(loaded, dict):
        raise typer.BadParameter("the spec file must hold a mapping", param_hint="--spec")
    return loaded


def overrides(spec_file: Path | None, sets: list[str], data: str | None) -> dict[str, Any] | None:
    spec: dict[str, Any] = read_spec(spec_file) if spec_file else {}
    for item in sets:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expects KEY=VALUE, got {item!r}", param_hint="--set")
        set_path(spec, key, scalar(raw))
    if data:
        set_path(spec, "data.uri", data)
    return spec or None


def summary(job: Job) -> str:
    if job.status == "failed":
        return f"job {job.job_id} failed: {job.error}"
    if job.status != "succeeded":
        return f"job {job.job_id} is {job.status} ({job.stage}, {job.percent}%)"
    challenger = job.metrics.challenger or {}
    production = job.metrics.production or {}
    scores = ", ".join(f"{k}={text(v)}" for k, v in list(challenger.items())[:3])
    line = f"job {job.job_id} succeeded: {job.model_name} v{job.model_version} ({job.best_candidate}) {scores}"
    metric = next(iter(challenger), None)
    if production and metric:
        line += f"; production v{job.production_version} {metric}={text(production.get(metric))}"
    return f"{line}\ndecision: {job.decision or '-'} — {job.reason or ''}"


def follow(client: Client, job_id: str, timeout: float | None, quiet: bool) -> Job:
    """Polls the job with a progress bar (on stderr) until it ends."""
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, disable=quiet) as bar:
        task = bar.add_task(job_id[:8], total=100)

        def update(job: Job) -> None:
            bar.update(task, completed=job.percent, description=f"{job_id[:8]} {job.status}: {job.stage}")

        return client.wait_for_job(job_id, on_progress=update, timeout=timeout, raise_on_failure=False)


def finish(job: Job, as_json: bool) -> None:
    if as_json:
        emit_json(job)
    else:
        out.print(summary(job), highlight=False)
    if job.status == "failed":
        raise typer.Exit(EXIT_JOB_FAILED)


@app.command()
def retrain(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="The model (a spec in trainer-api's models folder).")],
    data: Annotated[str | None, typer.Option(help="data.uri: a dataset id, path or http(s)/s3 URL.")] = None,
    spec: Annotated[Path | None, typer.Option(exists=True, dir_okay=False,
                                              help="A YAML or JSON file of spec overrides.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", metavar="KEY=VALUE",
                                                   help="An override, e.g. metric.threshold=0.9.")] = None,
    idempotency_key: Annotated[str | None, typer.Option(help="Sending it again answers the same job.")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the job with a progress bar.")] = True,
    wait_timeout: Annotated[float | None, typer.Option(help="Seconds to follow before giving up (exit 3).")]
    = None,
    as_json: Json = False,
) -> None:
    """Enqueue a retrain and (by default) follow it to its end."""
    body = overrides(spec, set_ or [], data)
    with connect(ctx) as client:
        accepted = client.retrain(model, spec=body, idempotency_key=idempotency_key)
        if not as_json:
            state = "queued" if accepted.created else "already exists (same idempotency key)"
            out.print(f"job {accepted.job_id} {state}", highlight=False)
        if not wait:
            if as_json:
                emit_json(accepted)
            return
        job = follow(client, accepted.job_id, wait_timeout, quiet=as_json)
    finish(job, as_json)


@app.command()
def jobs(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option("--model", "-m")] = None,
    status: Annotated[str | None, typer.Option(help="queued, running, succeeded or failed")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
    as_json: Json = False,
) -> None:
    """Recent retrain jobs, newest first."""
    with connect(ctx) as client:
        found = client.jobs(model=model, status=status, limit=limit)

    def render(found: list[Job]) -> None:
        grid = table("job", "model", "status", "progress", "stage", "version", "decision", "created")
        for job in found:
            grid.add_row(job.job_id[:8], job.model_name, job.status, f"{job.percent}%", job.stage,
                         text(job.model_version), text(job.decision), when(job.created_at))
        out.print(grid)

    show(found, as_json, render)


@app.command()
def job(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument()],
    follow_: Annotated[bool, typer.Option("--follow", help="A progress bar until the job ends.")] = False,
    as_json: Json = False,
) -> None:
    """One retrain job (exit 4 if it failed)."""
    with connect(ctx) as client:
        found = follow(client, job_id, None, quiet=as_json) if follow_ else client.job(job_id)
    finish(found, as_json)


@app.command()
def specs(ctx: typer.Context, as_json: Json = False) -> None:
    """The model specs trainer-api can retrain."""
    with connect(ctx) as client:
        found = client.specs()

    def render(found: list[Any]) -> None:
        grid = table("name", "task", "metric", "schedule", "candidates")
        for spec in found:
            if spec.error:
                grid.add_row(spec.name, "[red]invalid[/]", spec.error, "", "")
                continue
            metric = spec.metric or {}
            grid.add_row(spec.name, text(spec.task), f"{metric.get('name')} ≥ {metric.get('threshold')}"
                         if metric.get("higher_is_better", True) else f"{metric.get('name')} ≤ "
                         f"{metric.get('threshold')}", text(spec.schedule), ", ".join(spec.candidates))
        out.print(grid)

    show(found, as_json, render)


@datasets_app.command("upload")
def datasets_upload(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A CSV or Parquet file.")],
    as_json: Json = False,
) -> None:
    """Upload a file as a dataset snapshot (role scientist or higher); prints its id."""
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with connect(ctx) as client, Progress(*columns, console=err, disable=as_json) as bar:
        task = bar.add_task(file.name, total=file.stat().st_size)
        snap = client.upload_dataset(file, on_progress=lambda sent, total: bar.update(task, completed=sent))
    if as_json:
        return emit_json(snap)
    out.print(f"dataset {snap.dataset_id}: {snap.rows} rows, columns {', '.join(snap.columns)}", highlight=False)


def datasets_table(found: list[Any]) -> None:
    grid = table("dataset", "rows", "format", "size", "source", "created")
    for snap in found:
        grid.add_row(snap.dataset_id, str(snap.rows), snap.format, f"{snap.size_bytes:,} B", snap.source,
                     when(snap.created_at))
    out.print(grid)


@datasets_app.command("list")
def datasets_list(ctx: typer.Context, as_json: Json = False) -> None:
    """The dataset snapshots trainer-api holds."""
    with connect(ctx) as client:
        found = client.datasets()
    show(found, as_json, datasets_table)


@datasets_app.command("show")
def datasets_show(ctx: typer.Context, dataset_id: Annotated[str, typer.Argument()], as_json: Json = False) -> None:
    """One dataset snapshot, with its columns."""
    with connect(ctx) as client:
        snap = client.dataset(dataset_id)
    if as_json:
        return emit_json(snap)
    datasets_table([snap])
    out.print(f"columns: {', '.join(snap.columns)}", highlight=False)


# registry-proxy


@models_app.command("list")
def models_list(ctx: typer.Context, as_json: Json = False) -> None:
    """Registered models with their production and latest versions."""
    with connect(ctx) as client:
        found = client.models()

    def render(found: list[Any]) -> None:
        grid = table("model", "production", "latest", "aliases", "updated")
        for m in found:
            grid.add_row(m.name, text(m.production_version), text(m.latest_version),
                         ", ".join(f"{a}=v{v}" for a, v in m.aliases.items()), when(m.updated_at))
        out.print(grid)

    show(found, as_json, render)


@models_app.command("show")
def models_show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument()],
    version: Annotated[str | None, typer.Option("--version", "-v", help="Show this version only.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="Versions to list.")] = 20,
    as_json: Json = False,
) -> None:
    """A model's versions with aliases and metrics (or one version)."""
    with connect(ctx) as client:
        found: Any = client.version(name, version) if version else client.model(name, limit=limit)
    if as_json:
        return emit_json(found)
    versions = [found] if version else found.versions
    if not version:
        out.print(f"[bold]{found.name}[/] production v{text(found.production_version)} · "
                  f"latest v{text(found.latest_version)}")
    grid = table("version", "aliases", "status", "metrics", "run", "created")
    for v in versions:
        metrics = ", ".join(f"{k}={text(x)}" for k, x in sorted(v.metrics.items())[:4])
        grid.add_row(v.version, ", ".join(v.aliases), text(v.status), metrics, text(v.run_id), when(v.created_at))
    out.print(grid)


@app.command()
def decisions(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(help="pending, approved, rejected or superseded")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    as_json: Json = False,
) -> None:
    """Gate results that wait for (or had) a human decision."""
    with connect(ctx) as client:
        found = client.decisions(status=status, model=model, limit=limit)

    def render(found: list[Any]) -> None:
        grid = table("id", "model", "version", "status", "challenger", "production", "reason", "decided by")
        for d in found:
            grid.add_row(str(d.id), d.model_name, d.version, d.status, text(d.challenger_score),
                         f"v{d.production_version} {text(d.production_score)}" if d.production_version else "-",
                         text(d.reason), text(d.decided_by))
        out.print(grid)

    show(found, as_json, render)


def decided(ctx: typer.Context, decision_id: int, approve: bool, comment: str, as_json: bool) -> None:
    with connect(ctx) as client:
        d = client.approve(decision_id, comment=comment) if approve else client.reject(decision_id, comment=comment)
    show(d, as_json, lambda d: out.print(f"decision {d.id}: {d.model_name} v{d.version} {d.status}",
                                         highlight=False))


Comment = Annotated[str, typer.Option("--comment", "-c", help="Kept with the decision.")]


@app.command()
def approve(ctx: typer.Context, decision_id: Annotated[int, typer.Argument()], comment: Comment = "",
            as_json: Json = False) -> None:
    """Approve a pending decision: its version goes to production (role approver)."""
    decided(ctx, decision_id, True, comment, as_json)


@app.command()
def reject(ctx: typer.Context, decision_id: Annotated[int, typer.Argument()], comment: Comment = "",
           as_json: Json = False) -> None:
    """Reject a pending decision (role approver)."""
    decided(ctx, decision_id, False, comment, as_json)


@app.command()
def promote(ctx: typer.Context, name: Annotated[str, typer.Argument()], version: Annotated[str, typer.Argument()],
            reason: Reason = "", as_json: Json = False) -> None:
    """Move the production alias to a version (role approver)."""
    with connect(ctx) as client:
        result = client.promote(name, version, reason=reason)
    show(result, as_json, lambda r: out.print(
        f"{r.model_name}: production v{r.production_version}"
        + (f" (was v{text(r.previous_version)})" if r.changed else " (already)"), highlight=False))


@app.command()
def rollback(ctx: typer.Context, name: Annotated[str, typer.Argument()], reason: Reason = "",
             as_json: Json = False) -> None:
    """Put the previous production version back (role approver)."""
    with connect(ctx) as client:
        result = client.rollback(name, reason=reason)
    show(result, as_json, lambda r: out.print(
        f"{r.model_name}: production v{r.production_version} (rolled back v{text(r.rolled_back_version)})",
        highlight=False))


def canary_view(c: Any) -> None:
    out.print(f"[bold]{c.model_name}[/] canary v{c.version} [bold]{c.status}[/]: {c.weight}% of traffic, step "
              f"{c.step_index + 1}/{len(c.steps)} {c.steps} every {c.interval}; "
              f"production v{text(c.production_version)}" + (f"\nreason: {c.reason}" if c.reason else ""))
    if c.checks:
        grid = table("step", "weight", "time", "passed", "checks")
        for step in c.checks:
            checks = ", ".join(f"{k.name}={text(k.value)} (≤ {text(k.threshold)})" for k in step.checks)
            grid.add_row(str(step.step), f"{step.weight}%", when(step.time), "yes" if step.passed else "[red]no[/]",
                         checks)
        out.print(grid)


@canary_app.command("start")
def canary_start(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument()],
    version: Annotated[str, typer.Argument()],
    steps: Annotated[str | None, typer.Option(help="Traffic shares (%) per step, e.g. 5,25,50,100.")] = None,
    interval: Annotated[str | None, typer.Option(help="Each step's length: 30s, 2m, 1h.")] = None,
    require_approval: Annotated[bool | None, typer.Option(
        "--require-approval/--no-require-approval", help="Wait for `canary approve` after the last step.")] = None,
    max_error_ratio: Annotated[float | None, typer.Option()] = None,
    max_p99_seconds: Annotated[float | None, typer.Option()] = None,
    max_quality_drop: Annotated[float | None, typer.Option()] = None,
    reason: Reason = "",
    as_json: Json = False,
) -> None:
    """Start a canary of a version (role approver); defaults come from the model's policy."""
    try:
        shares = [int(s) for s in steps.split(",")] if steps else None
    except ValueError as exc:
        raise typer.BadParameter("comma-separated whole numbers", param_hint="--steps") from exc
    with connect(ctx) as client:
        c = client.start_canary(name, version, steps=shares, interval=interval, require_approval=require_approval,
                                reason=reason, max_error_ratio=max_error_ratio, max_p99_seconds=max_p99_seconds,
                                max_quality_drop=max_quality_drop)
    show(c, as_json, canary_view)


@canary_app.command("status")
def canary_status(ctx: typer.Context, name: Annotated[str, typer.Argument()], as_json: Json = False) -> None:
    """The model's latest canary, with every step's checks."""
    with connect(ctx) as client:
        c = client.canary(name)
    show(c, as_json, canary_view)


def canary_act(ctx: typer.Context, name: str, action: str, reason: str, as_json: bool) -> None:
    with connect(ctx) as client:
        act = {"pause": client.pause_canary, "resume": client.resume_canary, "abort": client.abort_canary,
               "approve": client.approve_canary}[action]
        c = act(name, reason=reason)
    show(c, as_json, canary_view)


@canary_app.command("pause")
def canary_pause(ctx: typer.Context, name: Annotated[str, typer.Argument()], reason: Reason = "",
                 as_json: Json = False) -> None:
    """Hold the canary at its share of traffic."""
    canary_act(ctx, name, "pause", reason, as_json)


@canary_app.command("resume")
def canary_resume(ctx: typer.Context, name: Annotated[str, typer.Argument()], reason: Reason = "",
                  as_json: Json = False) -> None:
    """Go on with a paused canary."""
    canary_act(ctx, name, "resume", reason, as_json)


@canary_app.command("abort")
def canary_abort(ctx: typer.Context, name: Annotated[str, typer.Argument()], reason: Reason = "",
                 as_json: Json = False) -> None:
    """Stop the canary: all traffic back to production."""
    canary_act(ctx, name, "abort", reason, as_json)


@canary_app.command("approve")
def canary_approve(ctx: typer.Context, name: Annotated[str, typer.Argument()], reason: Reason = "",
                   as_json: Json = False) -> None:
    """Promote a canary that passed every step and waits for a human."""
    canary_act(ctx, name, "approve", reason, as_json)


def shadow_view(s: Any) -> None:
    """A shadow period, then (from ``shadow status``) its evidence, or why there is none, and the policy's gaps."""
    out.print(f"[bold]{escape(s.model_name)}[/] shadow v{s.version} [bold]{s.status}[/]: {s.share}% of live "
              f"requests mirrored beside production v{text(s.production_version)}", highlight=False)
    out.print(f"started {when(s.started_at)} by {text(s.started_by)}", highlight=False)
    if s.reason:
        out.print(f"reason: {escape(s.reason)}", highlight=False)
    if s.ended_at:
        out.print(f"ended {when(s.ended_at)} by {text(s.ended_by)}: {escape(text(s.end_reason))}", highlight=False)
    if s.evidence_error:
        out.print(f"[yellow]no evidence:[/] {escape(s.evidence_error)}", highlight=False)
    e = s.evidence
    if e is not None:
        grid = table("evidence", "value")
        per_class = ", ".join(f"{k}={text(v)}" for k, v in sorted(e.agreement_per_class.items()))
        rows = [("seconds in shadow", e.seconds), ("answers compared", e.compared), ("agreement", e.agreement),
                ("agreement per class", per_class or None), ("mean |difference|", e.mean_abs_difference),
                ("p50 seconds", e.p50_seconds), ("p99 seconds", e.p99_seconds), ("mirrored answered", e.requests),
                ("errors", e.errors), ("shed", e.shed)]
        if e.live_quality is not None:
            q = e.live_quality
            rows.append((f"live {q.metric}", f"shadow {text(q.shadow)} · production {text(q.production)}"))
        for label, value in rows:
            grid.add_row(label, text(value))
        out.print(grid)
    if s.missing:
        out.print(f"[yellow]the policy still asks for:[/] {escape('; '.join(s.missing))}", highlight=False)
    elif s.policy is not None and s.evidence is not None:
        out.print("the evidence meets the policy's shadow block", highlight=False)


@shadow_app.command("start")
def shadow_start(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument()],
    version: Annotated[str, typer.Argument()],
    share: Annotated[int, typer.Option(min=1, max=100, help="Share of live requests (%) mirrored to the "
                                                            "version.")] = 100,
    reason: Reason = "",
    as_json: Json = False,
) -> None:
    """Mirror a share of live requests to a version, off the request path (role approver); one at a time."""
    with connect(ctx) as client:
        s = client.start_shadow(name, version, share, reason)
    show(s, as_json, shadow_view)


@shadow_app.command("status")
def shadow_status(ctx: typer.Context, name: Annotated[str, typer.Argument()], as_json: Json = False) -> None:
    """The model's latest shadow period with its live evidence (agreement, latency, shed requests)."""
    with connect(ctx) as client:
        s = client.shadow(name)
    show(s, as_json, shadow_view)


@shadow_app.command("stop")
def shadow_stop(ctx: typer.Context, name: Annotated[str, typer.Argument()], reason: Reason = "",
                as_json: Json = False) -> None:
    """End the running shadow: the version gets no more mirrored requests (role approver)."""
    with connect(ctx) as client:
        s = client.stop_shadow(name, reason)
    show(s, as_json, shadow_view)


@app.command()
def audit(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option("--model", "-m")] = None,
    action: Annotated[str | None, typer.Option(help="promote, rollback, approve, reject, canary_start...")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    before_id: Annotated[int | None, typer.Option(min=1, help="The next page: the last id shown.")] = None,
    as_json: Json = False,
) -> None:
    """The audit log, newest first."""
    with connect(ctx) as client:
        page = client.audit(model=model, action=action, limit=limit, before_id=before_id)
    if as_json:
        return emit_json(page)
    grid = table("id", "time", "actor", "action", "model", "from", "to", "reason",
                 title=f"{len(page.items)} of {page.total}")
    for e in page.items:
        actor = e.actor + (f" for {e.on_behalf_of}" if e.on_behalf_of else "")
        grid.add_row(str(e.id), when(e.time), actor, e.action, e.model_name, text(e.from_version),
                     text(e.to_version), text(e.reason))
    out.print(grid)
    if page.next_before_id:
        err.print(f"more: --before-id {page.next_before_id}")


@app.command()
def dora(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument()],
    window_days: Annotated[float | None, typer.Option(min=0.001, help="Default: the server's window.")] = None,
    as_json: Json = False,
) -> None:
    """A model's DORA figures: deployment frequency, lead time, change failure ratio, time to restore."""
    with connect(ctx) as client:
        report = client.dora(name, window_days=window_days)
    if as_json:
        return emit_json(report)
    grid = table("figure", "value", title=f"{report.model_name} over {report.window_days:g} days")
    for key, value in report.model_dump().items():
        if key not in ("model_name", "window_days"):
            grid.add_row(key, text(value))
    out.print(grid)


@app.command()
def whoami(ctx: typer.Context, as_json: Json = False) -> None:
    """Who the token belongs to, and its role."""
    with connect(ctx) as client:
        me = client.whoami()
    show(me, as_json, lambda me: out.print(f"{me.name} ({me.kind}), role {me.role}", highlight=False))


def principals_table(found: list[Any]) -> None:
    grid = table("name", "role", "kind", "state", "created")
    for p in found:
        grid.add_row(p.name, p.role, p.kind, f"disabled {when(p.disabled_at)}" if p.disabled_at else "active",
                     when(p.created_at))
    out.print(grid)


@principals_app.command("list")
def principals_list(ctx: typer.Context, as_json: Json = False) -> None:
    """Every principal."""
    with connect(ctx) as client:
        found = client.principals()
    show(found, as_json, principals_table)


@principals_app.command("show")
def principals_show(ctx: typer.Context, name: Annotated[str, typer.Argument()], as_json: Json = False) -> None:
    """A principal and its tokens (ids, prefixes, expiry: never the tokens)."""
    with connect(ctx) as client:
        p = client.principal(name)
    if as_json:
        return emit_json(p)
    principals_table([p])
    grid = table("token id", "prefix", "description", "expires", "revoked")
    for t in p.tokens:
        grid.add_row(str(t.id), t.prefix, text(t.description), when(t.expires_at), when(t.revoked_at))
    out.print(grid)


@principals_app.command("create")
def principals_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument()],
    role: Annotated[str, typer.Argument(help="viewer, scientist, approver, admin or trainer")],
    kind: Annotated[str, typer.Option(help="person or service")] = "person",
    as_json: Json = False,
) -> None:
    """Create a principal."""
    with connect(ctx) as client:
        p = client.create_principal(name, role, kind=kind)
    show(p, as_json, lambda p: out.print(f"principal {p.name}: role {p.role} ({p.kind})", highlight=False))


@principals_app.command("token")
def principals_token(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument()],
    description: Annotated[str | None, typer.Option()] = None,
    expires_in_days: Annotated[float | None, typer.Option(min=0.001)] = None,
    as_json: Json = False,
) -> None:
    """A new API token for a principal: printed once on stdout, store it now."""
    with connect(ctx) as client:
        t = client.create_token(name, description=description, expires_in_days=expires_in_days)
    if as_json:
        return emit_json(t)
    typer.echo(t.token)
    err.print(f"token {t.id} of {t.principal}, expires {t.expires_at or 'never'}", highlight=False)


@principals_app.command("revoke")
def principals_revoke(ctx: typer.Context, name: Annotated[str, typer.Argument()],
                      token_id: Annotated[int, typer.Argument(help="The id `principals show` lists.")],
                      as_json: Json = False) -> None:
    """Revoke one token of a principal."""
    with connect(ctx) as client:
        t = client.revoke_token(name, token_id)
    show(t, as_json, lambda t: out.print(f"token {t.id} ({t.prefix}…) revoked", highlight=False))


@principals_app.command("disable")
def principals_disable(ctx: typer.Context, name: Annotated[str, typer.Argument()], as_json: Json = False) -> None:
    """Disable a principal and revoke its tokens."""
    with connect(ctx) as client:
        p = client.disable_principal(name)
    show(p, as_json, lambda p: out.print(f"principal {p.name} disabled", highlight=False))


def main() -> None:
    """The console script ``mlops``."""
    app()


if __name__ == "__main__":
    main()
