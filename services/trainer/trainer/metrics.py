"""Trainer metrics. Workers record outcomes in the job store (Redis); the API's /metrics reads them at scrape
time, so one scrape target shows every worker's jobs (workers are short-lived processes without their own
endpoint). The API's own counters are created on first use, not when this module is imported."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache

import redis
from prometheus_client import Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from trainer.jobs import DURATION_BUCKETS, JobStore


@cache
def jobs_submitted() -> Counter:
    return Counter("trainer_jobs_submitted_total", "Retrain jobs accepted by the API", ["model_name"])


@cache
def alert_retrains() -> Counter:
    return Counter("trainer_alert_retrains_total", "Alert webhook notifications by what they caused",
                   ["model_name", "outcome"])


class RedisMetrics(Collector):
    """The job, gate and queue metrics, read from the job store and the broker at each scrape."""

    def __init__(self, store: JobStore, broker: redis.Redis, queue_names: list[str]) -> None:
        self.store = store
        self.broker = broker
        self.queues = queue_names

    def collect(self) -> Iterator[Metric]:
        try:
            recorded = self.store.job_metrics()
            depth_value = float(sum(self.broker.llen(q) for q in self.queues))
        except redis.RedisError:
            return
        jobs = CounterMetricFamily("trainer_jobs", "Finished retrain jobs", labels=["model_name", "status"])
        for labels, value in recorded.jobs.items():
            jobs.add_metric(list(labels), value)
        decisions = CounterMetricFamily("trainer_gate_decisions", "Gate outcomes", labels=["model_name", "decision"])
        for labels, value in recorded.decisions.items():
            decisions.add_metric(list(labels), value)
        scores = GaugeMetricFamily("trainer_candidate_score", "Validation score of each candidate in the last job",
                                   labels=["model_name", "candidate"])
        for labels, value in recorded.candidate_scores.items():
            scores.add_metric(list(labels), value)
        raw = recorded.duration_buckets
        buckets = [(str(b), raw.get(str(b), 0)) for b in DURATION_BUCKETS] + [("+Inf", raw.get("+Inf", 0))]
        duration = HistogramMetricFamily("trainer_job_duration_seconds", "Wall time of finished jobs",
                                         buckets=buckets, sum_value=recorded.duration_sum)
        depth = GaugeMetricFamily("trainer_queue_depth", "Messages waiting in the training queue")
        depth.add_metric([], depth_value)
        running = GaugeMetricFamily("trainer_jobs_running", "Jobs a worker is running now")
        running.add_metric([], float(recorded.running))
        yield from (jobs, decisions, scores, duration, depth, running)
