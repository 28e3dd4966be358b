"""`make bench`: the predictor against `mlflow models serve` and a no-op ASGI app, on this machine, in one run.

Steps: a temporary MLflow server over a fresh Postgres database; a TF-IDF + logistic-regression model of
data/sms_spam.csv trained here and registered (plus five more versions for the hot-swap scenario); the
`production` alias set directly with MlflowClient. Then, one worker each: the predictor (uvicorn, uvloop,
httptools), `mlflow models serve` of the same version, and a no-op ASGI app on the predictor's server stack.
wrk drives each with the same two texts a request at 1, 8, 32 and 128 connections. Then five promotions
under load, and resident memory steady and during swaps. Writes bench/results/latest.json and latest.md.

    python bench/run.py [--duration 10] [--connections 1,8,32,128] [--swap-duration 15]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]  # for tests.support
os.environ.setdefault("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

import httpx  # noqa: E402
import pandas as pd  # noqa: E402

from tests.support import processes as p  # noqa: E402

BENCH = REPO / "bench"
RESULTS = BENCH / "results"
TEXTS = ["WINNER!! Claim your free prize now, call 09061701461 to collect your cash award",
         "Are we still meeting for lunch tomorrow? Let me know when you leave work"]


def log(msg: str) -> None:
    print(f"[bench {datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)


# --- model ---------------------------------------------------------------------------------------------

def train_and_register(mlflow_uri: str, name: str, versions: int) -> list[str]:
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from mlops_common.featurizers import TextColumn

    frame = pd.read_csv(REPO / "data" / "sms_spam.csv")
    mlflow.set_tracking_uri(mlflow_uri)
    mlflow.set_registry_uri(mlflow_uri)
    mlflow.set_experiment("bench")
    registered = []
    for i in range(versions):
        c = [10.0, 3.0, 30.0, 1.0, 5.0, 20.0][i % 6]
        pipe = Pipeline([("text", TextColumn("text")), ("features", TfidfVectorizer(ngram_range=(1, 2), min_df=2)),
                         ("model", LogisticRegression(C=c, max_iter=1000))])
        pipe.fit(frame.text.tolist(), frame.label.tolist())
        example = frame[["text"]].head(3)
        with mlflow.start_run() as run:
            mlflow.sklearn.log_model(
                pipe, name="model", signature=infer_signature(example, pipe.predict(example)), input_example=example,
                skops_trusted_types=["mlops_common.featurizers.TextColumn"], pip_requirements=["scikit-learn"])
        registered.append(str(mlflow.register_model(f"runs:/{run.info.run_id}/model", name).version))
    return registered


def set_production(mlflow_uri: str, redis_url: str, channel: str, name: str, version: str) -> float:
    """Set the alias with MlflowClient and announce it; returns the time.monotonic() of the change."""
    import redis

    from mlops_common import mlflow_utils
    from mlops_common.events import ModelEvent

    client = mlflow_utils.client(mlflow_uri)
    client.set_registered_model_alias(name, mlflow_utils.PRODUCTION, version)
    changed = time.monotonic()
    conn = redis.Redis.from_url(redis_url)
    conn.publish(channel, ModelEvent(model=name, alias="production", version=version).to_json())
    conn.close()
    return changed


# --- load ----------------------------------------------------------------------------------------------

def wrk(url: str, body: bytes, connections: int, duration: float) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("wb", suffix=".json", delete=False) as fh:
        fh.write(body)
        body_file = fh.name
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "10s", "--latency",
           "-s", str(BENCH / "post.lua"), url]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "WRK_BODY_FILE": body_file},
                             timeout=duration + 60).stdout
    finally:
        os.unlink(body_file)
    return parse_wrk(out) | {"connections": connections}


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def parse_wrk(out: str) -> dict[str, Any]:
    result: dict[str, Any] = {"raw": out}
    if m := re.search(r"Requests/sec:\s+([\d.]+)", out):
        result["rps"] = float(m.group(1))
    for pct in ("50", "90", "99"):
        if m := re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M):
            result[f"p{pct}_ms"] = round(_ms(m.group(1)), 3)
    m = re.search(r"(\d+) requests in", out)
    result["requests"] = int(m.group(1)) if m else 0
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(x) for x in m.groups())
    result["errors"] = errors
    return result


def rss_mb(pid: int) -> float:
    """Resident set size of a process and its children, in MiB."""
    total = 0
    pids = [pid]
    with contextlib.suppress(Exception):
        pids += [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    for one in pids:
        with contextlib.suppress(FileNotFoundError):
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return round(total / 1024, 1)


# --- servers -------------------------------------------------------------------------------------------

def uvicorn_cmd(app: str, port: int) -> list[str]:
    return [str(p.VENV_BIN / "uvicorn"), app, "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
            "--loop", "uvloop", "--http", "httptools", "--workers", "1", "--log-level", "warning"]


def start(name: str, cmd: list[str], env: dict[str, str], log_dir: Path, ready_url: str) -> p.Process:
    proc = p.Process(name, cmd, env, log_dir).start()
    proc.wait_http(ready_url, timeout=180)
    return proc


def wait_version(url: str, version: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/model", timeout=5).json().get("model_version") == version:
                return
        time.sleep(0.05)
    raise TimeoutError(f"the predictor did not serve version {version} within {timeout}s")


# --- scenarios -----------------------------------------------------------------------------------------

def throughput(targets: dict[str, tuple[str, bytes]], connections: list[int], duration: float) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for label, (url, body) in targets.items():
        results[label] = []
        for c in connections:
            log(f"{label}: {c} connections, {duration}s")
            wrk(url, body, c, 2)  # warm-up
            run = wrk(url, body, c, duration)
            log(f"  {run.get('rps', 0):.0f} req/s  p50 {run.get('p50_ms')} ms  p99 {run.get('p99_ms')} ms  "
                f"errors {run['errors']}")
            results[label].append({k: v for k, v in run.items() if k != "raw"})
    return results


class Probe(threading.Thread):
    """Sequential requests beside wrk: per-request time, latency, status and the version that answered."""

    def __init__(self, url: str, body: bytes) -> None:
        super().__init__(daemon=True)
        self.url, self.body = url, body
        self.samples: list[tuple[float, float, int, str | None]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=10, headers={"content-type": "application/json"}) as client:
            while not self.stop.is_set():
                t0 = time.monotonic()
                try:
                    r = client.post(self.url, content=self.body)
                    version = r.json().get("model_version") if r.status_code == 200 else None
                    status = r.status_code
                except httpx.HTTPError:
                    version, status = None, 0
                self.samples.append((t0, (time.monotonic() - t0) * 1000, status, version))


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))], 3)


def hot_swap(url: str, body: bytes, pid: int, mlflow_uri: str, redis_url: str, channel: str, name: str,
             versions: list[str], duration: float, connections: int) -> dict[str, Any]:
    """Steady run, then a run of the same length with len(versions) promotions spread over it."""
    log(f"hot swap: steady run, {connections} connections, {duration}s")
    steady = wrk(url, body, connections, duration)
    steady_rss = rss_mb(pid)
    log(f"hot swap: {len(versions)} promotions during {duration}s of load")
    result: dict[str, Any] = {}
    rss_samples: list[float] = []
    probe = Probe(url, body)
    wrk_thread = threading.Thread(target=lambda: result.update(run=wrk(url, body, connections, duration)))
    swaps: list[dict[str, Any]] = []
    wrk_thread.start()
    probe.start()
    started = time.monotonic()
    gap = duration / (len(versions) + 1)
    stop_rss = threading.Event()

    def sample_rss() -> None:
        while not stop_rss.is_set():
            rss_samples.append(rss_mb(pid))
            time.sleep(0.05)

    rss_thread = threading.Thread(target=sample_rss, daemon=True)
    rss_thread.start()
    for i, version in enumerate(versions, start=1):
        time.sleep(max(0.0, started + i * gap - time.monotonic()))
        changed = set_production(mlflow_uri, redis_url, channel, name, version)
        served = None
        while time.monotonic() - changed < 30:
            hits = [t for t, _, status, v in probe.samples[-50:] if v == version and t >= changed]
            if hits:
                served = min(hits)
                break
            time.sleep(0.005)
        swaps.append({"version": version, "changed_at": changed,
                      "seconds_to_served": round(served - changed, 3) if served else None})
        log(f"  promoted version {version}: served after {swaps[-1]['seconds_to_served']} s")
    wrk_thread.join()
    probe.stop.set()
    probe.join()
    stop_rss.set()
    rss_thread.join()
    run = result["run"]
    windows = [(s["changed_at"], s["changed_at"] + (s["seconds_to_served"] or 1.0) + 0.5) for s in swaps]
    during = [lat for t, lat, _, _ in probe.samples if any(a <= t <= b for a, b in windows)]
    outside = [lat for t, lat, _, _ in probe.samples if not any(a <= t <= b for a, b in windows)]
    probe_errors = sum(1 for _, _, status, _ in probe.samples if status != 200)
    return {
        "connections": connections, "duration_s": duration, "promotions": len(versions),
        "steady": {k: v for k, v in steady.items() if k != "raw"},
        "with_swaps": {k: v for k, v in run.items() if k != "raw"},
        "errors": run["errors"] + probe_errors,
        "p99_ratio_swaps_to_steady": round(run["p99_ms"] / steady["p99_ms"], 2) if steady.get("p99_ms") else None,
        "probe": {"requests": len(probe.samples), "errors": probe_errors,
                  "p99_ms_within_swaps": percentile(during, 99), "p99_ms_outside_swaps": percentile(outside, 99),
                  "max_ms_within_swaps": round(max(during), 3) if during else None},
        "swaps": [{k: v for k, v in s.items() if k != "changed_at"} for s in swaps],
        "max_seconds_alias_to_served": max((s["seconds_to_served"] or float("inf")) for s in swaps),
        "rss_mb": {"steady": steady_rss, "max_during_swaps": max(rss_samples) if rss_samples else None},
    }


# --- report --------------------------------------------------------------------------------------------

def ratios(results: dict[str, Any], baseline: str) -> dict[str, Any]:
    base = {r["connections"]: r for r in results[baseline]}
    out: dict[str, Any] = {}
    for label, runs in results.items():
        if label == baseline:
            continue
        out[label] = []
        for run in runs:
            b = base.get(run["connections"], {})
            out[label].append({
                "connections": run["connections"],
                "rps_ratio": round(run["rps"] / b["rps"], 2) if b.get("rps") and run.get("rps") else None,
                "p99_ratio": round(run["p99_ms"] / b["p99_ms"], 3) if b.get("p99_ms") and run.get("p99_ms") else None,
            })
    return out


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# Benchmark ({report['finished_at']})", "",
             f"Machine: {report['machine']['cpus']} CPUs, {report['machine']['platform']}; load average before/after "
             f"{report['machine']['loadavg_before']} / {report['machine']['loadavg_after']}. "
             f"Model: TF-IDF (1-2 grams) + logistic regression on sms_spam.csv; two texts a request; wrk -t1, "
             f"{report['duration_s']} s per run; one worker per server.", "",
             "| server | conns | req/s | p50 ms | p99 ms | errors | req/s vs mlflow | p99 vs mlflow |",
             "|---|---|---|---|---|---|---|---|"]
    rat = report["ratios"]
    for label, runs in report["throughput"].items():
        for i, run in enumerate(runs):
            r = rat.get(label, [{}] * len(runs))[i] if label in rat else {}
            rps_ratio = f"{r['rps_ratio']}×" if r.get("rps_ratio") else "1×" if label == report["baseline"] else "-"
            p99_ratio = f"{r['p99_ratio']}×" if r.get("p99_ratio") else "1×" if label == report["baseline"] else "-"
            lines.append(f"| {label} | {run['connections']} | {run.get('rps', 0):,.0f} | {run.get('p50_ms')} | "
                         f"{run.get('p99_ms')} | {run['errors']} | {rps_ratio} | {p99_ratio} |")
    swap = report["hot_swap"]
    lines += ["", f"## Hot swap under load ({swap['promotions']} promotions, {swap['connections']} connections, "
                  f"{swap['duration_s']} s)", "",
              "| | req/s | p50 ms | p99 ms | errors |", "|---|---|---|---|---|",
              f"| steady | {swap['steady'].get('rps', 0):,.0f} | {swap['steady'].get('p50_ms')} | "
              f"{swap['steady'].get('p99_ms')} | {swap['steady']['errors']} |",
              f"| with promotions | {swap['with_swaps'].get('rps', 0):,.0f} | {swap['with_swaps'].get('p50_ms')} | "
              f"{swap['with_swaps'].get('p99_ms')} | {swap['with_swaps']['errors']} |", "",
              f"- failed requests during the swaps (wrk + probe): **{swap['errors']}**",
              f"- p99 with promotions / steady p99: **{swap['p99_ratio_swaps_to_steady']}×**",
              f"- probe (sequential requests beside wrk): p99 within swap windows "
              f"{swap['probe']['p99_ms_within_swaps']} ms, outside {swap['probe']['p99_ms_outside_swaps']} ms, "
              f"max within {swap['probe']['max_ms_within_swaps']} ms",
              "- alias change → new version answering: "
              + ", ".join(f"v{s['version']} {s['seconds_to_served']} s" for s in swap["swaps"])
              + f" (max **{swap['max_seconds_alias_to_served']} s**)",
              f"- resident memory of the predictor: steady {swap['rss_mb']['steady']} MiB, "
              f"max during swaps {swap['rss_mb']['max_during_swaps']} MiB", ""]
    lines += [f"Mean instances per predict call in the predictor over the whole run: "
              f"{report['predictor_mean_batch_instances']} (two per request: micro-batching coalesced requests).", ""]
    lines += ["## Resident memory after the throughput runs (MiB)", ""]
    lines += [f"- {label}: {mb}" for label, mb in report["rss_mb"].items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=float(os.environ.get("BENCH_DURATION", 10)))
    parser.add_argument("--connections", default=os.environ.get("BENCH_CONNECTIONS", "1,8,32,128"))
    parser.add_argument("--swap-duration", type=float, default=float(os.environ.get("BENCH_SWAP_DURATION", 15)))
    parser.add_argument("--swap-connections", type=int, default=int(os.environ.get("BENCH_SWAP_CONNECTIONS", 8)))
    parser.add_argument("--skip-invocations", action="store_true", help="do not bench the predictor's /invocations")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: apt-get install -y wrk")
    connections = [int(c) for c in args.connections.split(",")]
    loadavg_before = [round(x, 2) for x in os.getloadavg()]
    log_dir = Path(tempfile.mkdtemp(prefix="bench-logs-"))
    log(f"logs in {log_dir}")
    name = f"bench-sms-{uuid.uuid4().hex[:6]}"
    procs: list[p.Process] = []
    with p.postgres_database("mlops_bench_mlflow") as db_url, p.redis_database() as redis_url:
        try:
            artifacts = Path(tempfile.mkdtemp(prefix="bench-artifacts-"))
            mlflow_proc, mlflow_uri = p.mlflow_server(db_url, artifacts, log_dir)
            procs.append(mlflow_proc)
            log("training and registering 6 versions")
            versions = train_and_register(mlflow_uri, name, 6)
            channel = f"mlops:model-events:bench-{uuid.uuid4().hex[:6]}"
            set_production(mlflow_uri, redis_url, channel, name, versions[0])

            env = {"ENVIRONMENT": "test", "MLFLOW_TRACKING_URI": mlflow_uri, "REDIS_URL": redis_url,
                   "MODEL_EVENTS_CHANNEL": channel, "MODEL_NAME": name, "POLL_INTERVAL_SECONDS": "30",
                   "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true", "LOG_LEVEL": "WARNING"}
            ports = {k: p.free_port() for k in ("predictor", "mlflow", "noop")}
            urls = {k: f"http://127.0.0.1:{port}" for k, port in ports.items()}
            log("starting the predictor, mlflow models serve and the no-op app")
            predictor = start("predictor", uvicorn_cmd("predictor.main:app", ports["predictor"]), env, log_dir,
                              f"{urls['predictor']}/health")
            serve = start("mlflow-serve", [str(p.VENV_BIN / "mlflow"), "models", "serve", "-m",
                                           f"models:/{name}/{versions[0]}", "--env-manager", "local", "-h",
                                           "127.0.0.1", "-p", str(ports["mlflow"]), "-w", "1"],
                          {"MLFLOW_TRACKING_URI": mlflow_uri, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true"},
                          log_dir, f"{urls['mlflow']}/ping")
            noop = start("noop", uvicorn_cmd("bench.noop_app:app", ports["noop"]), {}, log_dir,
                         f"{urls['noop']}/")
            procs += [predictor, serve, noop]
            wait_version(urls["predictor"], versions[0])

            predict_body = json.dumps({"instances": TEXTS}).encode()
            split_body = json.dumps({"dataframe_split": {"columns": ["text"], "data": [[t] for t in TEXTS]}}).encode()
            targets = {"mlflow models serve": (f"{urls['mlflow']}/invocations", split_body),
                       "predictor /predict": (f"{urls['predictor']}/predict", predict_body)}
            if not args.skip_invocations:
                targets["predictor /invocations"] = (f"{urls['predictor']}/invocations", split_body)
            targets["no-op ASGI (ceiling)"] = (f"{urls['noop']}/", predict_body)
            assert httpx.post(targets["predictor /predict"][0], content=predict_body).json()["predictions"] == [
                "spam", "ham"]
            theirs = httpx.post(targets["mlflow models serve"][0], content=split_body,
                                headers={"content-type": "application/json"}).json()
            assert theirs["predictions"] == ["spam", "ham"], theirs

            results = throughput(targets, connections, args.duration)
            rss = {"predictor": rss_mb(predictor.proc.pid), "mlflow models serve": rss_mb(serve.proc.pid),
                   "no-op ASGI": rss_mb(noop.proc.pid)}
            swap = hot_swap(f"{urls['predictor']}/predict", predict_body, predictor.proc.pid, mlflow_uri,
                            redis_url, channel, name, versions[1:], args.swap_duration, args.swap_connections)
            batch = httpx.get(f"{urls['predictor']}/metrics").text
            batches = {m.group(1): float(m.group(2)) for m in
                       re.finditer(r"^predictor_batch_size_(sum|count) ([\d.e+]+)", batch, re.M)}
        finally:
            for proc in reversed(procs):
                proc.stop()
    report = {
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "loadavg_before": loadavg_before, "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "duration_s": args.duration, "baseline": "mlflow models serve", "texts_per_request": len(TEXTS),
        "throughput": results, "ratios": ratios(results, "mlflow models serve"), "rss_mb": rss, "hot_swap": swap,
        "predictor_mean_batch_instances": round(batches["sum"] / batches["count"], 2) if batches.get("count") else None,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "latest.md").write_text(markdown(report))
    log(f"wrote {RESULTS / 'latest.json'} and latest.md")
    print(markdown(report))


if __name__ == "__main__":
    main()
