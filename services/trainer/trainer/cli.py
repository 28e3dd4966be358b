"""`mlops`: the trainer from a terminal.

    mlops retrain sms-spam [--data URI] [--set metric.threshold=0.9] [--spec overrides.yaml] [--no-wait]
    mlops jobs [--model sms-spam] [--status running] [--limit 20]
    mlops job JOB_ID [--follow]
    mlops datasets upload FILE | mlops datasets list
    mlops models

Talks to trainer-api at $TRAINER_URL (default http://127.0.0.1:8002). Following a job shows a progress bar.
Every call carries your API token as ``Authorization: Bearer``: --token, else $MLOPS_TOKEN, else
$REGISTRY_ADMIN_TOKEN. Retraining and uploading need a scientist's token (or higher); reads may be open.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from tqdm import tqdm

TERMINAL = ("succeeded", "failed")
TOKEN_VARIABLES = ("MLOPS_TOKEN", "REGISTRY_ADMIN_TOKEN")


def token_from_env(environ: dict[str, str] | None = None) -> str | None:
    """The API token to send: $MLOPS_TOKEN, else $REGISTRY_ADMIN_TOKEN, else None."""
    env = os.environ if environ is None else environ
    return next((env[name].strip() for name in TOKEN_VARIABLES if env.get(name, "").strip()), None)


def _client(args: argparse.Namespace) -> httpx.Client:
    token = args.token or token_from_env()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=args.url, timeout=60, headers=headers)


def _fail(resp: httpx.Response) -> None:
    try:
        detail = resp.json().get("detail", resp.text)
    except ValueError:
        detail = resp.text
    if resp.status_code == 401:
        detail = f"{detail} (set MLOPS_TOKEN to your API token, or pass --token)"
    raise SystemExit(f"error {resp.status_code}: {detail}")


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value


def parse_overrides(args: argparse.Namespace) -> dict[str, Any] | None:
    spec: dict[str, Any] = {}
    if args.spec:
        spec = yaml.safe_load(Path(args.spec).read_text()) or {}
    for item in args.set or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        _set_path(spec, key, yaml.safe_load(raw))
    if args.data:
        _set_path(spec, "data.uri", args.data)
    return spec or None


def follow(client: httpx.Client, job_id: str, poll: float = 1.0, out: Any = None) -> dict[str, Any]:
    """Poll a job with a progress bar until it ends; returns the final job."""
    bar = tqdm(total=100, unit="%", desc=job_id[:8], file=out or sys.stderr,
               bar_format="{desc} {percentage:3.0f}%|{bar}| {postfix}")
    shown = 0
    try:
        while True:
            resp = client.get(f"/jobs/{job_id}")
            if resp.status_code != 200:
                _fail(resp)
            job = resp.json()
            target = int(round(job["progress"] * 100))
            if target > shown:
                bar.update(target - shown)
                shown = target
            bar.set_postfix_str(f"{job['status']}: {job['stage']}")
            if job["status"] in TERMINAL:
                return job
            time.sleep(poll)
    finally:
        bar.close()


def summary(job: dict[str, Any]) -> str:
    if job["status"] == "failed":
        return f"job {job['job_id']} failed: {job['error']}"
    if job["status"] != "succeeded":
        return f"job {job['job_id']} is {job['status']} ({job['stage']}, {job['progress'] * 100:.0f}%)"
    ch, prod = job["metrics"]["challenger"] or {}, job["metrics"]["production"] or {}
    metric = next(iter(ch), None)
    scores = ", ".join(f"{k}={v:.4f}" for k, v in list(ch.items())[:3])
    line = (f"job {job['job_id']} succeeded: {job['model_name']} v{job['model_version']} "
            f"({job.get('best_candidate')}) {scores}")
    if prod and metric:
        line += f"; production v{job['production_version']} {metric}={prod.get(metric, float('nan')):.4f}"
    return f"{line}\ndecision: {job['decision']} — {job.get('reason') or ''}"


def cmd_retrain(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"model_name": args.model}
    spec = parse_overrides(args)
    if spec:
        body["spec"] = spec
    if args.idempotency_key:
        body["idempotency_key"] = args.idempotency_key
    with _client(args) as client:
        resp = client.post("/retrain", json=body)
        if resp.status_code >= 400:
            _fail(resp)
        job_id = resp.json()["job_id"]
        print(f"job {job_id} {'queued' if resp.status_code == 202 else 'already exists (same idempotency key)'}")
        if args.no_wait:
            return 0
        job = follow(client, job_id)
        print(summary(job))
        return 0 if job["status"] == "succeeded" else 1


def cmd_jobs(args: argparse.Namespace) -> int:
    params = {k: v for k, v in {"model_name": args.model, "status": args.status, "limit": args.limit}.items() if v}
    with _client(args) as client:
        resp = client.get("/jobs", params=params)
        if resp.status_code >= 400:
            _fail(resp)
        jobs = resp.json()["jobs"]
    if args.json:
        print(json.dumps(jobs, indent=2))
        return 0
    print(f"{'job':<10} {'model':<20} {'status':<10} {'progress':>8}  {'stage':<28} {'version':>7}  "
          f"{'decision':<16} created")
    for job in jobs:
        print(f"{job['job_id'][:8]:<10} {job['model_name'][:20]:<20} {job['status']:<10} "
              f"{job['progress'] * 100:7.0f}%  {str(job['stage'])[:28]:<28} {job['model_version'] or '-':>7}  "
              f"{job['decision'] or '-':<16} {job['created_at'][:19]}")
    return 0


def cmd_job(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.follow:
            job = follow(client, args.job_id)
        else:
            resp = client.get(f"/jobs/{args.job_id}")
            if resp.status_code >= 400:
                _fail(resp)
            job = resp.json()
    print(json.dumps(job, indent=2) if args.json else summary(job))
    return 0 if job["status"] != "failed" else 1


def cmd_datasets(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.action == "upload":
            path = Path(args.file)
            with path.open("rb") as fh:
                resp = client.post("/datasets", files={"file": (path.name, fh)})
            if resp.status_code >= 400:
                _fail(resp)
            snap = resp.json()
            print(f"dataset {snap['dataset_id']}: {snap['rows']} rows, columns {', '.join(snap['columns'])}")
            return 0
        resp = client.get("/datasets")
        if resp.status_code >= 400:
            _fail(resp)
        for snap in resp.json()["datasets"]:
            print(f"{snap['dataset_id'][:16]}  {snap['rows']:>8} rows  {snap['format']:<8} {snap['source']}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    with _client(args) as client:
        resp = client.get("/specs")
        if resp.status_code >= 400:
            _fail(resp)
    for spec in resp.json()["specs"]:
        if "error" in spec:
            print(f"{spec['name']:<20} invalid spec: {spec['error']}")
            continue
        metric = spec["metric"]
        print(f"{spec['name']:<20} {spec['task']:<20} {metric['name']} (threshold {metric['threshold']})  "
              f"schedule {spec['schedule'] or '-'}  candidates {', '.join(spec['candidates'])}")
    return 0


def cmd_principals(args: argparse.Namespace) -> int:
    """Principals and their tokens at registry-proxy (admin only)."""
    token = args.token or token_from_env()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=args.registry_url, timeout=60, headers=headers) as client:
        if args.action == "list":
            resp = client.get("/principals")
        elif args.action == "create":
            resp = client.post("/principals", json={"name": args.name, "role": args.role, "kind": args.kind})
        elif args.action == "token":
            body = {"expires_in_days": args.expires_in_days} if args.expires_in_days else {}
            resp = client.post(f"/principals/{args.name}/tokens", json=body)
        elif args.action == "revoke":
            resp = client.delete(f"/principals/{args.name}/tokens/{args.token_id}")
        else:
            resp = client.delete(f"/principals/{args.name}")
        if resp.status_code >= 400:
            _fail(resp)
    answer = resp.json()
    if args.json or args.action not in ("list", "token"):
        print(json.dumps(answer, indent=2))
    elif args.action == "list":
        for p in answer:
            print(f"{p['name']:<24} {p['role']:<10} {p['kind']:<8} {'disabled' if p['disabled_at'] else 'active'}")
    else:
        print(answer["token"])  # shown once: store it now
        print(f"token {answer['id']} of {answer['principal']}, expires {answer['expires_at'] or 'never'}",
              file=sys.stderr)
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="mlops", description="Retrain models and follow jobs on trainer-api.",
        epilog="Authentication: every call sends an API token as 'Authorization: Bearer <token>', taken from "
               "--token, else the environment variable MLOPS_TOKEN, else REGISTRY_ADMIN_TOKEN. Retrain and "
               "dataset upload need a token of role scientist or higher; an admin creates one with "
               "POST /principals/<name>/tokens on registry-proxy.")
    root.add_argument("--url", default=os.environ.get("TRAINER_URL", "http://127.0.0.1:8002"),
                      help="trainer-api base URL (default: $TRAINER_URL or http://127.0.0.1:8002)")
    root.add_argument("--token", default=None,
                      help="API token (default: $MLOPS_TOKEN, else $REGISTRY_ADMIN_TOKEN); prefer the variable, "
                           "a token on the command line shows in the process list")
    sub = root.add_subparsers(dest="command", required=True)

    retrain = sub.add_parser("retrain", help="enqueue a retrain and follow it")
    retrain.add_argument("model")
    retrain.add_argument("--data", help="data.uri: dataset id, path or http(s) URL")
    retrain.add_argument("--spec", help="YAML/JSON file of spec overrides")
    retrain.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. metric.threshold=0.9")
    retrain.add_argument("--idempotency-key")
    retrain.add_argument("--no-wait", action="store_true")
    retrain.set_defaults(func=cmd_retrain)

    jobs = sub.add_parser("jobs", help="list recent jobs")
    jobs.add_argument("--model")
    jobs.add_argument("--status", choices=["queued", "running", "succeeded", "failed"])
    jobs.add_argument("--limit", type=int, default=20)
    jobs.add_argument("--json", action="store_true")
    jobs.set_defaults(func=cmd_jobs)

    job = sub.add_parser("job", help="show one job")
    job.add_argument("job_id")
    job.add_argument("--follow", action="store_true", help="progress bar until it ends")
    job.add_argument("--json", action="store_true")
    job.set_defaults(func=cmd_job)

    models = sub.add_parser("models", help="list the model specs trainer-api knows")
    models.set_defaults(func=cmd_models)

    data = sub.add_parser("datasets", help="upload or list datasets")
    data.add_argument("action", choices=["upload", "list"])
    data.add_argument("file", nargs="?")
    data.set_defaults(func=cmd_datasets)

    people = sub.add_parser("principals", help="principals and API tokens at registry-proxy (admin)")
    people.add_argument("action", choices=["list", "create", "token", "revoke", "disable"])
    people.add_argument("name", nargs="?")
    people.add_argument("role", nargs="?", choices=["viewer", "scientist", "approver", "admin", "trainer"])
    people.add_argument("--kind", choices=["person", "service"], default="person")
    people.add_argument("--token-id", type=int, help="for revoke: the token's id (mlops principals list --json)")
    people.add_argument("--expires-in-days", type=float)
    people.add_argument("--json", action="store_true")
    people.add_argument("--registry-url", default=os.environ.get("REGISTRY_URL", "http://127.0.0.1:8001"),
                        help="registry-proxy base URL (default: $REGISTRY_URL or http://127.0.0.1:8001)")
    people.set_defaults(func=cmd_principals)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "action", None) == "upload" and not args.file:
        raise SystemExit("mlops datasets upload FILE")
    if args.command == "principals" and args.action != "list" and not args.name:
        raise SystemExit(f"mlops principals {args.action} NAME")
    if args.command == "principals" and args.action == "create" and not args.role:
        raise SystemExit("mlops principals create NAME ROLE")
    if args.command == "principals" and args.action == "revoke" and args.token_id is None:
        raise SystemExit("mlops principals revoke NAME --token-id ID")
    try:
        return args.func(args)
    except httpx.HTTPError as exc:
        raise SystemExit(f"trainer-api unreachable at {args.url}: {exc}") from exc


if __name__ == "__main__":
    sys.exit(main())
