"""Job records in Redis: created by the API, advanced by the workers, read by the API and the CLI.

A job is a Redis hash whose fields hold JSON values, so the challenger and production evaluations (which may
run at the same time on different workers) each write their own fields without overwriting the other's.
The store owns every ``trainer:*`` key: jobs and their index, idempotency keys, step locks, alert cool-downs,
schedule slots and the job metrics the workers record for the API's ``/metrics``.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
import redis

Status = Literal["queued", "running", "succeeded", "failed"]
TERMINAL = ("succeeded", "failed")
PREFIX = "trainer:"
PUBLIC_FIELDS = (
    "job_id", "model_name", "status", "stage", "progress", "created_at", "updated_at", "started_at",
    "finished_at", "source", "idempotency_key", "requested_by", "run_id", "model_uri", "model_version",
    "best_candidate", "production_version", "production_error", "metrics", "decision", "decision_id", "reason",
    "policy", "trainer_outcome", "dataset", "test_split", "candidates", "error",
)
METRICS_PREFIX = f"{PREFIX}metrics:"
DURATION_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)
# Joins a metric's label values into one hash field.
SEP = "\x1f"
DAY_SECONDS = 24 * 3600
# KEYS[1]: a model's alert-triggered retrains (sorted set, score = time). ARGV: now, cool-down, cap per day,
# a unique member. Answers {"ok", 0}, {"cooldown", seconds since the last} or {"cap", retrains in the last day}.
CLAIM_MODEL_ALERT = f"""
local now, cooldown, cap = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - {DAY_SECONDS})
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] and now - tonumber(last[2]) < cooldown then
  return {{'cooldown', tostring(now - tonumber(last[2]))}}
end
local count = redis.call('ZCARD', KEYS[1])
if count >= cap then
  return {{'cap', tostring(count)}}
end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('EXPIRE', KEYS[1], math.max({DAY_SECONDS}, cooldown))
return {{'ok', '0'}}
"""


@dataclass
class JobMetrics:
    """What the workers recorded, as the API's collector reads it: counts by label values, the duration
    histogram's cumulative bucket counts (``"+Inf"`` included) and sum, and the jobs running now."""

    jobs: dict[tuple[str, ...], float]
    decisions: dict[tuple[str, ...], float]
    candidate_scores: dict[tuple[str, ...], float]
    duration_buckets: dict[str, int]
    duration_sum: float
    running: int


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def connect(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=10, health_check_interval=30)


class JobStore:
    def __init__(self, conn: redis.Redis, ttl_seconds: int = 30 * 24 * 3600) -> None:
        self.r = conn
        self.ttl = ttl_seconds

    # keys
    @staticmethod
    def key(job_id: str) -> str:
        return f"{PREFIX}job:{job_id}"

    @staticmethod
    def idem_key(model_name: str, idempotency_key: str) -> str:
        return f"{PREFIX}idem:{model_name}:{idempotency_key}"

    INDEX = f"{PREFIX}jobs"
    RUNNING = f"{PREFIX}running"

    # writes
    def create(self, model_name: str, spec: dict[str, Any], *, source: str = "api",
               idempotency_key: str | None = None, requested_by: str | None = None) -> tuple[dict[str, Any], bool]:
        """A new queued job, or (with an idempotency key already used for this model) the first one.

        Returns ``(job, created)``.
        """
        job_id = uuid.uuid4().hex
        if idempotency_key:
            claimed = self.r.set(self.idem_key(model_name, idempotency_key), job_id, nx=True, ex=self.ttl)
            if not claimed:
                first = self.r.get(self.idem_key(model_name, idempotency_key))
                existing = self.get(first.decode()) if first else None
                if existing is not None:
                    return existing, False
                self.r.set(self.idem_key(model_name, idempotency_key), job_id, ex=self.ttl)
        stamp = now_iso()
        record: dict[str, Any] = {
            "job_id": job_id, "model_name": model_name, "status": "queued", "stage": "queued", "progress": 0.0,
            "created_at": stamp, "updated_at": stamp, "started_at": None, "finished_at": None, "source": source,
            "requested_by": requested_by,
            "idempotency_key": idempotency_key, "run_id": None, "model_version": None, "production_version": None,
            "challenger_metrics": None, "production_metrics": None, "decision": None, "reason": None,
            "dataset": None, "candidates": [], "error": None, "spec": spec,
        }
        pipe = self.r.pipeline()
        pipe.hset(self.key(job_id), mapping={k: orjson.dumps(v) for k, v in record.items()})
        pipe.expire(self.key(job_id), self.ttl)
        pipe.zadd(self.INDEX, {job_id: datetime.now(UTC).timestamp()})
        pipe.execute()
        return self.public(record), True

    def forget(self, job: dict[str, Any]) -> None:
        """Undo :meth:`create` (when the job could not be enqueued)."""
        pipe = self.r.pipeline()
        pipe.delete(self.key(job["job_id"]))
        pipe.zrem(self.INDEX, job["job_id"])
        if job.get("idempotency_key"):
            pipe.delete(self.idem_key(job["model_name"], job["idempotency_key"]))
        pipe.execute()

    def update(self, job_id: str, **fields: Any) -> None:
        fields["updated_at"] = now_iso()
        status = fields.get("status")
        pipe = self.r.pipeline()
        pipe.hset(self.key(job_id), mapping={k: orjson.dumps(v) for k, v in fields.items()})
        if status == "running":
            pipe.sadd(self.RUNNING, job_id)
        elif status in TERMINAL:
            pipe.srem(self.RUNNING, job_id)
        pipe.execute()

    def stage(self, job_id: str, stage: str, progress: float, **fields: Any) -> None:
        self.update(job_id, stage=stage, progress=round(min(max(progress, 0.0), 1.0), 3), **fields)

    def claim(self, job_id: str, step: str, ttl: int) -> bool:
        """A short lock on one step of a job (``SET NX``), so two deliveries never do it at once."""
        return bool(self.r.set(f"{PREFIX}lock:{job_id}:{step}", "1", nx=True, ex=ttl))

    def release(self, job_id: str, step: str) -> None:
        self.r.delete(f"{PREFIX}lock:{job_id}:{step}")

    def mark_dispatched(self, job_id: str) -> bool:
        """True for the one delivery that may start the job's training steps (``HSETNX``)."""
        return bool(self.r.hsetnx(self.key(job_id), "dispatched", "true"))

    # alert cool-downs and schedule slots
    @staticmethod
    def _alert_key(model_name: str, group: str) -> str:
        return f"{PREFIX}alert:{model_name}:{hashlib.sha256(group.encode()).hexdigest()[:24]}"

    def claim_alert(self, model_name: str, group: str, cooldown_seconds: int) -> bool:
        """True when this alert group has not retrained the model within the cool-down (and now has)."""
        return bool(self.r.set(self._alert_key(model_name, group), "1", nx=True, ex=max(cooldown_seconds, 1)))

    def release_alert(self, model_name: str, group: str) -> None:
        """Undo :meth:`claim_alert` (the retrain was refused, so the next alert may try again)."""
        self.r.delete(self._alert_key(model_name, group))

    def claim_model_alert(self, model_name: str, cooldown_seconds: int, per_day: int) -> str | None:
        """Books an alert-triggered retrain of the model: None when it may go ahead (and is now counted), else why
        not (``skipped: cool-down ...`` or ``skipped: cap ...``). Atomic (one Lua script), so two notifications
        arriving together never both pass; :meth:`confirm_model_alert` then restarts the cool-down from the
        moment the job is queued."""
        now = datetime.now(UTC).timestamp()
        answer: Any = self.r.eval(CLAIM_MODEL_ALERT, 1, f"{PREFIX}alert-retrains:{model_name}", now,
                                  cooldown_seconds, per_day, uuid.uuid4().hex)
        kind, value = answer[0].decode(), float(answer[1])
        if kind == "ok":
            return None
        if kind == "cooldown":
            return (f"skipped: cool-down: {model_name} was retrained from an alert {value:.0f}s ago "
                    f"(ALERT_MODEL_COOLDOWN_SECONDS={cooldown_seconds})")
        return (f"skipped: cap: {model_name} was already retrained {value:.0f} times from alerts in the last 24 "
                f"hours (ALERT_MAX_RETRAINS_PER_DAY={per_day}); a person decides what comes next")

    def confirm_model_alert(self, model_name: str) -> None:
        """The booked retrain is queued: its time (the start of the cool-down) becomes now."""
        key = f"{PREFIX}alert-retrains:{model_name}"
        newest: Any = self.r.zrange(key, -1, -1)
        if newest:
            self.r.zadd(key, {newest[0]: datetime.now(UTC).timestamp()}, xx=True)

    def release_model_alert(self, model_name: str) -> None:
        """Undo the last :meth:`claim_model_alert` (the retrain was refused)."""
        self.r.zpopmax(f"{PREFIX}alert-retrains:{model_name}")

    def schedule_slot(self, model_name: str) -> datetime | None:
        """The last cron slot handled for the model, None before the first."""
        last = self.r.get(f"{PREFIX}schedule:{model_name}")
        return datetime.fromisoformat(last.decode()) if last is not None else None

    def set_schedule_slot(self, model_name: str, slot: datetime) -> None:
        self.r.set(f"{PREFIX}schedule:{model_name}", slot.isoformat())

    # job metrics (written by the workers, read at scrape time)
    def record_job(self, model_name: str, status: str, seconds: float | None) -> None:
        pipe = self.r.pipeline()
        pipe.hincrby(f"{METRICS_PREFIX}jobs_total", f"{model_name}{SEP}{status}", 1)
        if seconds is not None:
            for bound in DURATION_BUCKETS:
                if seconds <= bound:
                    pipe.hincrby(f"{METRICS_PREFIX}duration_buckets", str(bound), 1)
            pipe.hincrby(f"{METRICS_PREFIX}duration_buckets", "+Inf", 1)
            pipe.hincrbyfloat(f"{METRICS_PREFIX}duration_sum", "sum", seconds)
        pipe.execute()

    def record_candidates(self, model_name: str, scores: dict[str, float]) -> None:
        """The validation scores of the model's last job's candidates (replacing the previous job's)."""
        key = f"{METRICS_PREFIX}candidate_score"
        pipe = self.r.pipeline()
        for field in self.r.hkeys(key):
            if field.decode().startswith(f"{model_name}{SEP}"):
                pipe.hdel(key, field)
        for candidate, score in scores.items():
            pipe.hset(key, f"{model_name}{SEP}{candidate}", score)
        pipe.execute()

    def record_decision(self, model_name: str, decision: str) -> None:
        self.r.hincrby(f"{METRICS_PREFIX}gate_decisions_total", f"{model_name}{SEP}{decision}", 1)

    def job_metrics(self) -> JobMetrics:
        pipe = self.r.pipeline()
        for name in ("jobs_total", "gate_decisions_total", "candidate_score", "duration_buckets"):
            pipe.hgetall(f"{METRICS_PREFIX}{name}")
        pipe.hget(f"{METRICS_PREFIX}duration_sum", "sum")
        pipe.scard(self.RUNNING)
        jobs, decisions, scores, buckets, total, running = pipe.execute()

        def by_labels(fields: dict[bytes, bytes]) -> dict[tuple[str, ...], float]:
            return {tuple(k.decode().split(SEP)): float(v) for k, v in fields.items()}

        return JobMetrics(jobs=by_labels(jobs), decisions=by_labels(decisions), candidate_scores=by_labels(scores),
                          duration_buckets={k.decode(): int(v) for k, v in buckets.items()},
                          duration_sum=float(total or 0), running=int(running))

    def ping(self) -> None:
        """Raises ``redis.RedisError`` when the store cannot be reached."""
        self.r.ping()

    def close(self) -> None:
        self.r.close()

    # reads
    def raw(self, job_id: str) -> dict[str, Any] | None:
        data = self.r.hgetall(self.key(job_id))
        if not data:
            return None
        return {k.decode(): orjson.loads(v) for k, v in data.items()}

    def get(self, job_id: str) -> dict[str, Any] | None:
        record = self.raw(job_id)
        return self.public(record) if record else None

    def list(self, *, model_name: str | None = None, status: str | None = None, limit: int = 50) -> list[dict]:
        jobs: list[dict[str, Any]] = []
        start = 0
        while len(jobs) < limit:
            ids = self.r.zrevrange(self.INDEX, start, start + 199)
            if not ids:
                break
            start += len(ids)
            for raw_id in ids:
                job = self.get(raw_id.decode())
                if job is None:
                    self.r.zrem(self.INDEX, raw_id)
                    continue
                if (model_name and job["model_name"] != model_name) or (status and job["status"] != status):
                    continue
                jobs.append(job)
                if len(jobs) >= limit:
                    break
        return jobs

    def running_count(self) -> int:
        return int(self.r.scard(self.RUNNING))

    @staticmethod
    def public(record: dict[str, Any]) -> dict[str, Any]:
        job = {k: record.get(k) for k in PUBLIC_FIELDS}
        job["metrics"] = {"challenger": record.get("challenger_metrics"),
                          "production": record.get("production_metrics")}
        job["golden"] = golden_view(record)
        return job


def golden_view(record: dict[str, Any]) -> dict[str, Any] | None:
    """The job's golden-set scores: the pinned snapshot it used and both versions' scores on it (or why one
    is missing); with no pinned golden set, None plus, when registry-proxy could not be asked, why."""
    sha = record.get("golden_sha256")
    if not sha:
        lookup = record.get("golden_lookup_error")
        return {"sha256": None, "lookup_error": lookup} if lookup else None
    errors = [f"{who}: {record[key]}" for who, key in (("challenger", "challenger_golden_error"),
                                                       ("production", "production_golden_error"))
              if record.get(key)]
    return {"sha256": sha, "challenger": record.get("challenger_golden"),
            "production": record.get("production_golden"), "error": "; ".join(errors) or None}
