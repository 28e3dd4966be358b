"""`make bench`: the predictor against `mlflow models serve` and a no-op ASGI app, on this machine, in one run.

Steps: a temporary MLflow server over a fresh Postgres database; a TF-IDF + logistic-regression model of
data/sms_spam.csv trained here and registered (plus five more versions for the hot-swap scenario); the
`production` alias set directly with MlflowClient. Then, one worker each: the predictor (uvicorn, uvloop,
httptools), `mlflow models serve` of the same version, and a no-op ASGI app on the predictor's server stack.
wrk drives each with the same two texts a request at 1, 8, 32 and 128 connections (the predictor also through
its Open Inference Protocol v2 route, the texts as a BYTES tensor). Then a predictor of its own serving two
models at once (MODELS), with one wrk on each; five promotions under load, and resident memory steady and during
swaps; and progressive delivery as registry-proxy drives it (the `mlops.rollout` tag plus a rollout event): a
shadow at 100 %, a canary at 50 %, and that canary cleared under load. Writes bench/results/latest.json and
latest.md.

    python bench/run.py [--duration 10] [--connections 1,8,32,128] [--swap-duration 15] [--rollback-duration 10]
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]  # for tests.support
os.environ.setdefault("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

import httpx  # noqa: E402
import pandas as pd  # noqa: E402

from mlops_common.events import ModelEvent  # noqa: E402
from mlops_common.names import Tag  # noqa: E402
from mlops_common.rollout import ROLLOUT_EVENT_ALIAS, CanarySplit, RolloutSplit, ShadowSplit  # noqa: E402
from tests.support import processes as p  # noqa: E402

BENCH = REPO / "bench"
RESULTS = BENCH / "results"
OIP = "predictor OIP v2 infer"
OIP_TARGET = 8.0  # the target: OIP v2 at least this many times mlflow models serve's req/s
TEXTS = ["WINNER!! Claim your free prize now, call 09061701461 to collect your cash award",
         "Are we still meeting for lunch tomorrow? Let me know when you leave work"]


def log(msg: str) -> None:
    print(f"[bench {datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)


# --- model ---------------------------------------------------------------------------------------------

def train_and_register(mlflow_uri: str, name: str, cs: list[float]) -> list[str]:
    """One registered version of ``name`` per regularisation strength in ``cs`` (so versions really differ)."""
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
    for c in cs:
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


def announce(redis_url: str, channel: str, event: ModelEvent) -> None:
    """Publish a model event, so that predictors re-read the registry at once instead of at their next poll."""
    import redis

    conn = redis.Redis.from_url(redis_url)
    try:
        conn.publish(channel, event.to_json())
    finally:
        conn.close()


def set_production(mlflow_uri: str, redis_url: str, channel: str, name: str, version: str) -> float:
    """Set the alias with MlflowClient and announce it; returns the time.monotonic() of the change."""
    from mlops_common import mlflow_utils

    client = mlflow_utils.client(mlflow_uri)
    client.set_registered_model_alias(name, mlflow_utils.PRODUCTION, version)
    changed = time.monotonic()
    announce(redis_url, channel, ModelEvent(model=name, alias="production", version=version))
    return changed


def set_rollout(mlflow_uri: str, redis_url: str, channel: str, name: str, split: RolloutSplit) -> float:
    """Write the split on the model's ``mlops.rollout`` tag and announce it, as registry-proxy does (its
    automatic rollback included); returns the time.monotonic() of the change."""
    from mlops_common import mlflow_utils

    mlflow_utils.client(mlflow_uri).set_registered_model_tag(name, Tag.ROLLOUT, split.to_tag())
    changed = time.monotonic()
    version = next((s.version for s in (split.canary, split.shadow) if s is not None), None)
    announce(redis_url, channel, ModelEvent(model=name, alias=ROLLOUT_EVENT_ALIAS, version=version, action="rollout"))
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


def summary(run: dict[str, Any]) -> dict[str, Any]:
    """A wrk result without its raw output (what the report keeps)."""
    return {k: v for k, v in run.items() if k != "raw"}


def _ms(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if m is None:
        raise ValueError(f"not a wrk duration: {value!r}")
    number, unit = m.groups()
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


def metric_by(url: str, family: str, label: str) -> dict[str, float]:
    """A Prometheus counter family on ``url`` (a /metrics page), summed by one label's values."""
    totals: dict[str, float] = {}
    text = httpx.get(url, timeout=10).text
    for m in re.finditer(rf"^{family}\{{([^}}]*)\}} (\S+)$", text, re.M):
        key = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1))).get(label, "")
        totals[key] = totals.get(key, 0.0) + float(m.group(2))
    return totals


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, int]:
    """What counters gained between two readings (labels that did not move left out)."""
    return {k: round(v - before.get(k, 0.0)) for k, v in after.items() if v - before.get(k, 0.0) > 0}


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


def pid_of(proc: p.Process) -> int:
    assert proc.proc is not None, f"{proc.name} was never started"
    return proc.proc.pid


def wait_until(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Poll ``check`` (a predictor that does not answer yet counts as not yet) until it holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            if check():
                return
        time.sleep(0.05)
    raise TimeoutError(f"the predictor did not {what} within {timeout}s")


def wait_version(url: str, version: str, timeout: float = 60) -> None:
    wait_until(lambda: httpx.get(f"{url}/model", timeout=5).json().get("model_version") == version,
               f"serve version {version}", timeout)


def wait_rollout(url: str, name: str, split: RolloutSplit, timeout: float = 60) -> None:
    """Until GET /model shows the split and every version it names is held: a canary or shadow version still
    loading is not used (production answers alone), which would bench the wrong thing."""
    wanted = split.model_dump()
    named = {s.version for s in (split.canary, split.shadow) if s is not None}

    def followed() -> bool:
        info = httpx.get(f"{url}/model", timeout=5).json()
        held = {v for m in httpx.get(f"{url}/models", timeout=5).json()["models"] if m["model_name"] == name
                for v in m["loaded_versions"]}
        return bool(info["rollout"] == wanted and named <= held | {info["model_version"]})

    wait_until(followed, f"follow the rollout split {split.to_tag()}", timeout)


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
            results[label].append(summary(run))
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

    @property
    def errors(self) -> int:
        return sum(1 for _, _, status, _ in self.samples if status != 200)


@contextlib.contextmanager
def under_load(url: str, body: bytes, connections: int, duration: float) -> Iterator[tuple[dict[str, Any], Probe]]:
    """wrk and a Probe on ``url`` while the block runs; on leaving, waits for wrk's end. The dict holds the wrk
    result (without raw output) once the block is left."""
    result: dict[str, Any] = {}
    probe = Probe(url, body)
    load = threading.Thread(target=lambda: result.update(summary(wrk(url, body, connections, duration))))
    load.start()
    probe.start()
    try:
        yield result, probe
    finally:
        load.join()
        probe.stop.set()
        probe.join()


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
    rss_samples: list[float] = []
    swaps: list[dict[str, Any]] = []
    gap = duration / (len(versions) + 1)
    stop_rss = threading.Event()

    def sample_rss() -> None:
        while not stop_rss.is_set():
            rss_samples.append(rss_mb(pid))
            time.sleep(0.05)

    rss_thread = threading.Thread(target=sample_rss, daemon=True)
    with under_load(url, body, connections, duration) as (run, probe):
        started = time.monotonic()
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
    stop_rss.set()
    rss_thread.join()
    windows = [(s["changed_at"], s["changed_at"] + (s["seconds_to_served"] or 1.0) + 0.5) for s in swaps]
    during = [lat for t, lat, _, _ in probe.samples if any(a <= t <= b for a, b in windows)]
    outside = [lat for t, lat, _, _ in probe.samples if not any(a <= t <= b for a, b in windows)]
    probe_errors = probe.errors
    return {
        "connections": connections, "duration_s": duration, "promotions": len(versions),
        "steady": summary(steady), "with_swaps": run, "errors": run["errors"] + probe_errors,
        "p99_ratio_swaps_to_steady": round(run["p99_ms"] / steady["p99_ms"], 2) if steady.get("p99_ms") else None,
        "probe": {"requests": len(probe.samples), "errors": probe_errors,
                  "p99_ms_within_swaps": percentile(during, 99), "p99_ms_outside_swaps": percentile(outside, 99),
                  "max_ms_within_swaps": round(max(during), 3) if during else None},
        "swaps": [{k: v for k, v in s.items() if k != "changed_at"} for s in swaps],
        "max_seconds_alias_to_served": max((s["seconds_to_served"] or float("inf")) for s in swaps),
        "rss_mb": {"steady": steady_rss, "max_during_swaps": max(rss_samples) if rss_samples else None},
    }


def concurrent(urls: dict[str, str], body: bytes, connections: int, duration: float) -> dict[str, Any]:
    """One wrk per URL, all at the same time (each with ``connections``): each result, the sum and worst p99."""
    done: dict[str, dict[str, Any]] = {}
    threads = [threading.Thread(target=lambda k=k, u=u: done.__setitem__(k, summary(wrk(u, body, connections,
                                                                                           duration))))
               for k, u in urls.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    runs = {k: done[k] for k in urls}  # in the order asked, not the order the runs ended
    return {"connections_each": connections, "runs": runs,
            "total_rps": round(sum(r.get("rps", 0.0) for r in runs.values()), 1),
            "max_p99_ms": max((r.get("p99_ms") or 0.0) for r in runs.values()),
            "errors": sum(r["errors"] for r in runs.values())}


def multi_model(env: dict[str, str], names: list[str], body: bytes, log_dir: Path, connections: int,
                duration: float) -> dict[str, Any]:
    """A predictor of its own configured for every model in ``names`` (MODELS), loaded on all of them at once:
    what serving several models from one process costs each of them."""
    url = f"http://127.0.0.1:{p.free_port()}"
    proc = start("predictor-multi", uvicorn_cmd("predictor.main:app", int(url.rsplit(":", 1)[1])),
                 env | {"MODEL_NAME": names[0], "MODELS": ",".join(names)}, log_dir, f"{url}/health")
    try:
        wait_until(lambda: all(m["model_version"] for m in httpx.get(f"{url}/models", timeout=5).json()["models"]),
                   f"serve {', '.join(names)}", 120)
        urls = {n: f"{url}/models/{n}/predict" for n in names}
        log(f"multi-model: {len(names)} models, {connections} connections each, {duration}s")
        concurrent(urls, body, connections, 2)  # warm-up
        result = concurrent(urls, body, connections, duration)
        log(f"  {result['total_rps']:.0f} req/s in all, worst p99 {result['max_p99_ms']} ms, "
            f"errors {result['errors']}")
        return result
    finally:
        proc.stop()


@dataclass(frozen=True)
class Rollouts:
    """The predictor, model and candidate version the progressive-delivery scenarios split traffic for."""

    url: str
    body: bytes
    mlflow_uri: str
    redis_url: str
    channel: str
    name: str
    candidate: str
    connections: int
    duration: float

    def split(self, split: RolloutSplit, wait: bool = True) -> float:
        """Change the split as registry-proxy does; unless told not to, wait until the predictor follows it."""
        changed = set_rollout(self.mlflow_uri, self.redis_url, self.channel, self.name, split)
        if wait:
            wait_rollout(self.url, self.name, split)
        return changed

    def counters(self, family: str, label: str) -> dict[str, float]:
        return metric_by(f"{self.url}/metrics", family, label)

    def load(self, what: str) -> dict[str, Any]:
        log(f"{what}: {self.connections} connections, {self.duration}s")
        run = summary(wrk(f"{self.url}/predict", self.body, self.connections, self.duration))
        log(f"  {run.get('rps', 0):.0f} req/s  p50 {run.get('p50_ms')} ms  p99 {run.get('p99_ms')} ms  "
            f"errors {run['errors']}")
        return run


def shadow_scenario(r: Rollouts) -> dict[str, Any]:
    """/predict without a split, then with every request mirrored to the candidate (shadow at 100 %)."""
    r.split(RolloutSplit())
    without = r.load("shadow: without")
    r.split(RolloutSplit(shadow=ShadowSplit(version=r.candidate, share=100)))
    before = r.counters("predictor_shadow_requests_total", "outcome")
    with_shadow = r.load("shadow: 100 %")
    time.sleep(1.0)  # mirrors still queued when wrk stops are scored (or were shed) by now
    outcomes = delta(r.counters("predictor_shadow_requests_total", "outcome"), before)
    return {"version": r.candidate, "share": 100, "connections": r.connections, "without_shadow": without,
            "with_shadow": with_shadow, "mirrored": outcomes,
            "rps_ratio": round(with_shadow["rps"] / without["rps"], 3) if without.get("rps") else None,
            "p50_added_ms": round(with_shadow["p50_ms"] - without["p50_ms"], 3),
            "p99_added_ms": round(with_shadow["p99_ms"] - without["p99_ms"], 3),
            "targets": {"rps_ratio_min": 0.6, "p50_added_ms_max": 1.0}}


def canary_scenario(r: Rollouts) -> dict[str, Any]:
    """/predict with the candidate as a 50 % canary: throughput, and the share each version answered."""
    r.split(RolloutSplit(canary=CanarySplit(version=r.candidate, weight=50)))
    before = r.counters("predictor_model_requests_total", "model_version")
    run = r.load("canary: 50 %")
    answered = delta(r.counters("predictor_model_requests_total", "model_version"), before)
    total = sum(answered.values())
    return {"version": r.candidate, "weight": 50, "connections": r.connections, "run": run,
            "answered_by_version": answered,
            "canary_share_pct": round(100 * answered.get(r.candidate, 0) / total, 1) if total else None}


def rollback_scenario(r: Rollouts, duration: float) -> dict[str, Any]:
    """A 50 % canary under load, cleared at half time (registry-proxy's automatic rollback): failed requests,
    and how long after the tag change the canary still answered (seen by the probe)."""
    r.split(RolloutSplit(canary=CanarySplit(version=r.candidate, weight=50)))
    log(f"canary rollback: {r.connections} connections, {duration}s, canary cleared at {duration / 2:.1f}s")
    with under_load(f"{r.url}/predict", r.body, r.connections, duration) as (run, probe):
        time.sleep(duration / 2)
        changed = r.split(RolloutSplit(), wait=False)
    wait_rollout(r.url, r.name, RolloutSplit())
    canary_ends = [t + lat / 1000 for t, lat, _, v in probe.samples if v == r.candidate]
    after = [v for t, _, _, v in probe.samples if t > changed]
    last = max(canary_ends, default=changed)
    result = {"version": r.candidate, "weight": 50, "connections": r.connections, "duration_s": duration,
              "run": run, "errors": run["errors"] + probe.errors,
              "probe": {"requests": len(probe.samples), "errors": probe.errors,
                        "canary_answers_before": len(canary_ends) - after.count(r.candidate),
                        "requests_after_change": len(after)},
              "seconds_to_production_only": round(max(0.0, last - changed), 3), "target_errors": 0}
    log(f"  failed requests {result['errors']}, production only {result['seconds_to_production_only']} s "
        "after the tag change")
    return result


def progressive_delivery(r: Rollouts, rollback_duration: float) -> dict[str, Any]:
    """Shadow, canary and canary rollback on one predictor; the split is cleared at the end whatever happens."""
    try:
        return {"shadow": shadow_scenario(r), "canary": canary_scenario(r),
                "canary_rollback": rollback_scenario(r, rollback_duration)}
    finally:
        r.split(RolloutSplit(), wait=False)


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


def row(label: str, run: dict[str, Any]) -> str:
    """One `| label | req/s | p50 ms | p99 ms | errors |` table row."""
    return f"| {label} | {run.get('rps', 0):,.0f} | {run.get('p50_ms')} | {run.get('p99_ms')} | {run['errors']} |"


RUN_HEADER = ["| | req/s | p50 ms | p99 ms | errors |", "|---|---|---|---|---|"]


def markdown_oip(report: dict[str, Any]) -> list[str]:
    ratios_ = ", ".join(f"{r['rps_ratio']}× at {r['connections']}" for r in report["ratios"].get(OIP, []))
    return ["", f"- {OIP} / mlflow models serve req/s: **{ratios_}** connections "
                f"(target ≥ {report['targets']['oip_v2_rps_ratio_to_mlflow_min']}×)"]


def markdown_multi(multi: dict[str, Any]) -> list[str]:
    each = multi["connections_each"]
    return ["", f"## Two models in one predictor ({len(multi['runs'])} wrk at once, {each} connections each)", "",
            *RUN_HEADER, *(row(f"/models/{n}/predict", r) for n, r in multi["runs"].items()), "",
            f"- in all: **{multi['total_rps']:,.0f} req/s**, worst p99 {multi['max_p99_ms']} ms, "
            f"errors {multi['errors']}"]


def markdown_rollouts(pd_: dict[str, Any]) -> list[str]:
    sh, ca, rb = pd_["shadow"], pd_["canary"], pd_["canary_rollback"]
    mirrored = ", ".join(f"{k} {v:,}" for k, v in sorted(sh["mirrored"].items())) or "none"
    answered = sum(ca["answered_by_version"].values())
    shares = ", ".join(f"v{v} {n:,} ({100 * n / answered:.1f} %)" for v, n in sorted(ca["answered_by_version"].items()))
    return ["", f"## Shadow at 100 % (v{sh['version']}, {sh['connections']} connections)", "", *RUN_HEADER,
            row("without shadow", sh["without_shadow"]), row("shadow 100 %", sh["with_shadow"]), "",
            f"- throughput with shadow / without: **{sh['rps_ratio']:.0%}** (target ≥ "
            f"{sh['targets']['rps_ratio_min']:.0%}); p50 added **{sh['p50_added_ms']} ms** (target ≤ "
            f"{sh['targets']['p50_added_ms_max']} ms); p99 added {sh['p99_added_ms']} ms",
            f"- mirrored requests by outcome (predictor_shadow_requests_total; shed: the queue was full): {mirrored} "
            f"of {sh['with_shadow']['requests']:,} requests",
            "", f"## Canary at {ca['weight']} % (v{ca['version']}, {ca['connections']} connections)", "", *RUN_HEADER,
            row(f"canary {ca['weight']} %", ca["run"]), "",
            f"- answered by version (predictor_model_requests_total): {shares}",
            "", f"## Canary rollback under load ({rb['weight']} % canary v{rb['version']} cleared at half time, "
                f"{rb['connections']} connections, {rb['duration_s']} s)", "", *RUN_HEADER, row("wrk", rb["run"]), "",
            f"- failed requests (wrk + probe): **{rb['errors']}** (target {rb['target_errors']})",
            f"- tag cleared → every answer from production: **{rb['seconds_to_production_only']} s** (probe: "
            f"{rb['probe']['requests']:,} requests, {rb['probe']['canary_answers_before']:,} canary answers before "
            f"the change, {rb['probe']['requests_after_change']:,} requests after it)"]


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
    lines += markdown_oip(report) + markdown_multi(report["multi_model"])
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
              f"max during swaps {swap['rss_mb']['max_during_swaps']} MiB"]
    lines += [*markdown_rollouts(report["progressive_delivery"]), ""]
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
    parser.add_argument("--rollout-connections", type=int, default=int(os.environ.get("BENCH_ROLLOUT_CONNECTIONS", 8)),
                        help="connections of the shadow, canary and rollback runs (split over the multi-model run)")
    parser.add_argument("--rollback-duration", type=float,
                        default=float(os.environ.get("BENCH_ROLLBACK_DURATION", 10)))
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
            server = p.mlflow_server(db_url, artifacts, log_dir)
            mlflow_uri = server.uri
            procs.append(server.process)
            log("training and registering 6 versions, and a second model for the multi-model run")
            versions = train_and_register(mlflow_uri, name, [10.0, 3.0, 30.0, 1.0, 5.0, 20.0])
            other = f"{name}-b"
            other_version = train_and_register(mlflow_uri, other, [2.0])[0]
            channel = f"mlops:model-events:bench-{uuid.uuid4().hex[:6]}"
            set_production(mlflow_uri, redis_url, channel, name, versions[0])
            set_production(mlflow_uri, redis_url, channel, other, other_version)

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
            oip_body = json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(TEXTS)],
                                               "data": TEXTS}]}).encode()
            targets = {"mlflow models serve": (f"{urls['mlflow']}/invocations", split_body),
                       "predictor /predict": (f"{urls['predictor']}/predict", predict_body),
                       OIP: (f"{urls['predictor']}/v2/models/{name}/infer", oip_body)}
            if not args.skip_invocations:
                targets["predictor /invocations"] = (f"{urls['predictor']}/invocations", split_body)
            targets["no-op ASGI (ceiling)"] = (f"{urls['noop']}/", predict_body)
            assert httpx.post(targets["predictor /predict"][0], content=predict_body).json()["predictions"] == [
                "spam", "ham"]
            oip_out = httpx.post(targets[OIP][0], content=oip_body).json()["outputs"]
            assert oip_out[0]["data"] == ["spam", "ham"], oip_out
            theirs = httpx.post(targets["mlflow models serve"][0], content=split_body,
                                headers={"content-type": "application/json"}).json()
            assert theirs["predictions"] == ["spam", "ham"], theirs

            results = throughput(targets, connections, args.duration)
            rss = {"predictor": rss_mb(pid_of(predictor)), "mlflow models serve": rss_mb(pid_of(serve)),
                   "no-op ASGI": rss_mb(pid_of(noop))}
            multi = multi_model(env, [name, other], predict_body, log_dir, max(1, args.rollout_connections // 2),
                                args.duration)
            swap = hot_swap(f"{urls['predictor']}/predict", predict_body, pid_of(predictor), mlflow_uri,
                            redis_url, channel, name, versions[1:], args.swap_duration, args.swap_connections)
            rollouts = progressive_delivery(
                Rollouts(url=urls["predictor"], body=predict_body, mlflow_uri=mlflow_uri, redis_url=redis_url,
                         channel=channel, name=name, candidate=versions[1], connections=args.rollout_connections,
                         duration=args.duration), args.rollback_duration)
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
        "targets": {"oip_v2_rps_ratio_to_mlflow_min": OIP_TARGET}, "multi_model": multi,
        "progressive_delivery": rollouts,
        "predictor_mean_batch_instances": round(batches["sum"] / batches["count"], 2) if batches.get("count") else None,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "latest.md").write_text(markdown(report))
    log(f"wrote {RESULTS / 'latest.json'} and latest.md")
    print(markdown(report))


if __name__ == "__main__":
    main()
