#!/usr/bin/env python3
"""`make simulate`: replay January to June of taxi fares through the real trainer API.

Each month it generates that month's fares (with the economy's drift and April's regime change), uploads
them (POST /datasets), retrains the taxi-fare model on them (POST /retrain), follows the job, and prints
what the gate decided: promoted, kept, or a human asked (pending approval). With --approve it approves
pending decisions through registry-proxy.

`--timeline REPORT.json --png OUT.png` draws instead the timeline of an unattended loop run (`make test-loop`
with LOOP_REPORT=REPORT.json): live MAE over time, the served version, and the drift onset, the alert, the
retrain and the promotion marked.

Every call sends an API token (Authorization: Bearer) from $MLOPS_TOKEN, else $REGISTRY_ADMIN_TOKEN: uploading
and retraining need role scientist or higher; --approve, and a --threshold other than the gate policy's (the
model's metric block: a policy change), need an approver.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time

import httpx
from mlops_client import token_from_env  # the `mlops` CLI's rule for the token

from trainer import taxi

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]


def follow(client: httpx.Client, job_id: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").raise_for_status().json()
        line = f"    {job['progress'] * 100:5.1f}%  {job['stage']}"
        if line != last and sys.stdout.isatty():
            print(f"\r{line:<60}", end="", flush=True)
            last = line
        if job["status"] in ("succeeded", "failed"):
            if sys.stdout.isatty():
                print("\r" + " " * 62 + "\r", end="")
            return job
        time.sleep(1)
    raise SystemExit(f"job {job_id} did not finish within {timeout:.0f}s")


def plot_timeline(report_path: str, png: str) -> None:
    """The loop run's live MAE (the predictor's window over the feedback) against time since the drift onset, one
    colour per served version, with the run's events as vertical lines."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = json.loads(open(report_path).read())
    fig, ax = plt.subplots(figsize=(10, 4), dpi=110)
    versions = sorted({v for _, v, _ in report["timeline"]}, key=lambda v: int(v) if v.isdigit() else 0)
    for version in versions:
        points = [(t, m) for t, v, m in report["timeline"] if v == version]
        ax.plot([t for t, _ in points], [m for _, m in points], ".", markersize=3, label=f"served by v{version}")
    if report.get("threshold") is not None:
        ax.axhline(report["threshold"], color="grey", linestyle="--", linewidth=1, label="MAE threshold")
    for (name, at), colour in zip(report["events"].items(), ["red", "orange", "purple", "green", "black"],
                                  strict=False):
        ax.axvline(at, color=colour, linewidth=1)
        ax.text(at, ax.get_ylim()[1] * 0.95, f" {name} ({at:.0f}s)", rotation=90, va="top", fontsize=8)
    ax.set_xlabel("seconds since the drift onset")
    ax.set_ylabel("live MAE ($)")
    ax.set_title("Drift → alert → retrain on production data → promotion, unattended")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(png)
    print(f"wrote {png}")


def fmt(value: float | None) -> str:
    return "    -" if value is None else f"{value:5.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trainer-url", default=os.environ.get("TRAINER_URL", "http://127.0.0.1:8002"))
    parser.add_argument("--registry-url", default=os.environ.get("REGISTRY_URL", "http://127.0.0.1:8001"))
    parser.add_argument("--model-name", default=os.environ.get("SIMULATE_MODEL_NAME", "taxi-fare"))
    parser.add_argument("--months", default="1-6", help="range of months, e.g. 1-6")
    parser.add_argument("--rows", type=int, default=5000, help="trips per month")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threshold", type=float, default=1.6, help="MAE bar in dollars")
    parser.add_argument("--fast", action="store_true", help="smaller tree ensembles")
    parser.add_argument("--approve", action="store_true",
                        help="approve pending decisions (the token must be an approver's)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for each job")
    parser.add_argument("--timeline", help="a loop report (make test-loop with LOOP_REPORT=...) to plot instead")
    parser.add_argument("--png", default="docs/img/loop-timeline.png", help="where --timeline writes its plot")
    args = parser.parse_args(argv)
    if args.timeline:
        plot_timeline(args.timeline, args.png)
        return 0
    first, _, last = args.months.partition("-")
    months = range(int(first), int(last or first) + 1)

    token = token_from_env()
    if token is None:
        print("set MLOPS_TOKEN (or REGISTRY_ADMIN_TOKEN) to an API token of role scientist or higher")
        return 2
    auth = {"Authorization": f"Bearer {token}"}
    client = httpx.Client(base_url=args.trainer_url, timeout=60, headers=auth)
    try:
        client.get("/health").raise_for_status()
    except httpx.HTTPError as exc:
        print(f"trainer-api is not reachable at {args.trainer_url} ({exc}); start the stack with `make dev`")
        return 2
    print(f"Replaying {MONTHS[months[0] - 1]}-{MONTHS[months[-1] - 1]} for model {args.model_name!r} "
          f"(MAE threshold ${args.threshold:.2f}, {args.rows} trips a month) via {args.trainer_url}\n")
    print(f"{'month':<10} {'rows':>6} {'dropped':>7}  {'dataset':<12} {'best':<18} {'MAE new':>7} "
          f"{'MAE prod':>8}  {'version':>7}  decision")
    outcomes = []
    for month in months:
        frame = taxi.generate(month, args.rows, seed=args.seed)
        buf = io.BytesIO()
        frame.to_csv(buf, index=False)
        upload = client.post("/datasets", files={"file": (f"taxi-2024-{month:02d}.csv", buf.getvalue(), "text/csv")})
        upload.raise_for_status()
        dataset = upload.json()
        spec = taxi.spec(dataset["dataset_id"], threshold=args.threshold, fast=args.fast)
        resp = client.post("/retrain", json={"model_name": args.model_name, "spec": spec,
                                             "idempotency_key": f"simulate-{args.seed}-{dataset['sha256'][:16]}"})
        if resp.status_code >= 400:
            print(f"{MONTHS[month - 1]:<10} retrain refused ({resp.status_code}): {resp.text}")
            return 1
        job = follow(client, resp.json()["job_id"], args.timeout)
        if job["status"] == "failed":
            print(f"{MONTHS[month - 1]:<10} job failed: {job['error']}")
            return 1
        new = (job["metrics"]["challenger"] or {}).get("mae")
        prod = (job["metrics"]["production"] or {}).get("mae")
        dropped = (job.get("dataset") or {}).get("rows_dropped", 0)
        decision = job["decision"]
        note = {"promoted": "promoted to production", "kept": "kept production",
                "pending_approval": "a human is asked (pending approval)"}.get(decision, decision)
        print(f"{MONTHS[month - 1]:<10} {dataset['rows']:>6} {dropped:>7}  {dataset['sha256'][:12]:<12} "
              f"{job.get('best_candidate') or '-':<18} {fmt(new):>7} {fmt(prod):>8}  {'v' + job['model_version']:>7}  "
              f"{note}")
        outcomes.append(decision)
        if decision == "pending_approval" and job.get("decision_id") is not None:
            if args.approve:
                approved = httpx.post(f"{args.registry_url}/decisions/{job['decision_id']}/approve", timeout=30,
                                      headers=auth)
                print(f"{'':<10} approved decision {job['decision_id']}: {approved.status_code}")
            else:
                print(f"{'':<10} approve with: curl -X POST -H 'Authorization: Bearer $MLOPS_TOKEN' "
                      f"{args.registry_url}/decisions/{job['decision_id']}/approve")
    counts = {d: outcomes.count(d) for d in ("promoted", "kept", "pending_approval")}
    print(f"\n{len(outcomes)} months: {counts['promoted']} promoted, {counts['kept']} kept, "
          f"{counts['pending_approval']} asked a human")
    return 0


if __name__ == "__main__":
    sys.exit(main())
