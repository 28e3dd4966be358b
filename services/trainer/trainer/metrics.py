"""Trainer metrics. Workers record outcomes in Redis; the API's /metrics reads them at scrape time, so one
scrape target shows every worker's jobs (workers are short-lived processes without their own endpoint)."""

from __future__ import annotations

from collections.abc import Iterator

import redis
from prometheus_client import Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

PREFIX = "trainer:metrics:"
DURATION_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)
SEP = "\x1f"

JOBS_SUBMITTED = Counter("trainer_jobs_submitted_total", "Retrain jobs accepted by the API", ["model_name"])
ALERT_RETRAINS = Counter("trainer_alert_retrains_total", "Alert webhook notifications by what they caused",
                         ["model_name", "outcome"])


def record_job(r: redis.Redis, model_name: str, status: str, seconds: float | None) -> None:
    pipe = r.pipeline()
    pipe.hincrby(f"{PREFIX}jobs_total", f"{model_name}{SEP}{status}", 1)
    if seconds is not None:
        for bound in DURATION_BUCKETS:
            if seconds <= bound:
                pipe.hincrby(f"{PREFIX}duration_buckets", str(bound), 1)
        pipe.hincrby(f"{PREFIX}duration_buckets", "+Inf", 1)
        pipe.hincrbyfloat(f"{PREFIX}duration_sum", "sum", seconds)
    pipe.execute()


def record_candidates(r: redis.Redis, model_name: str, scores: dict[str, float]) -> None:
    key = f"{PREFIX}candidate_score"
    pipe = r.pipeline()
    for field in r.hkeys(key):
        if field.decode().startswith(f"{model_name}{SEP}"):
            pipe.hdel(key, field)
    for candidate, score in scores.items():
        pipe.hset(key, f"{model_name}{SEP}{candidate}", score)
    pipe.execute()


def record_decision(r: redis.Redis, model_name: str, decision: str) -> None:
    r.hincrby(f"{PREFIX}gate_decisions_total", f"{model_name}{SEP}{decision}", 1)


class RedisMetrics(Collector):
    def __init__(self, r: redis.Redis, broker: redis.Redis, queue_names: list[str], running: str) -> None:
        self.r = r
        self.broker = broker
        self.queues = queue_names
        self.running = running

    def _pairs(self, key: str) -> Iterator[tuple[list[str], float]]:
        for field, value in self.r.hgetall(key).items():
            yield field.decode().split(SEP), float(value)

    def collect(self) -> Iterator:
        try:
            jobs = CounterMetricFamily("trainer_jobs", "Finished retrain jobs", labels=["model_name", "status"])
            for (model, status), value in self._pairs(f"{PREFIX}jobs_total"):
                jobs.add_metric([model, status], value)
            decisions = CounterMetricFamily("trainer_gate_decisions", "Gate outcomes",
                                            labels=["model_name", "decision"])
            for (model, decision), value in self._pairs(f"{PREFIX}gate_decisions_total"):
                decisions.add_metric([model, decision], value)
            scores = GaugeMetricFamily("trainer_candidate_score", "Validation score of each candidate in the last job",
                                       labels=["model_name", "candidate"])
            for (model, candidate), value in self._pairs(f"{PREFIX}candidate_score"):
                scores.add_metric([model, candidate], value)
            raw = {k.decode(): int(v) for k, v in self.r.hgetall(f"{PREFIX}duration_buckets").items()}
            total = float(self.r.hget(f"{PREFIX}duration_sum", "sum") or 0)
            buckets = [(str(b), raw.get(str(b), 0)) for b in DURATION_BUCKETS] + [("+Inf", raw.get("+Inf", 0))]
            duration = HistogramMetricFamily("trainer_job_duration_seconds", "Wall time of finished jobs",
                                             buckets=buckets, sum_value=total)
            depth = GaugeMetricFamily("trainer_queue_depth", "Messages waiting in the training queue")
            depth.add_metric([], float(sum(self.broker.llen(q) for q in self.queues)))
            running = GaugeMetricFamily("trainer_jobs_running", "Jobs a worker is running now")
            running.add_metric([], float(self.r.scard(self.running)))
        except redis.RedisError:
            return
        yield from (jobs, decisions, scores, duration, depth, running)
