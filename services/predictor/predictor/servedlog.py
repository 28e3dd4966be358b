"""The served log: what the predictor served (inputs, prediction, version, request id, time), kept in Postgres so
that production traffic, once labelled by feedback, can become training data (the trainer's
``production:<model>`` datasets read this table).

Off unless SERVED_LOG_DATABASE_URL (or ``SERVED_LOG_DATABASE_URL_FILE``) is set. A request is logged with
probability SERVED_LOG_SAMPLE (all of its instances, one row each); the request path only appends to a bounded
in-memory buffer, and one background task per process writes the buffer every SERVED_LOG_FLUSH_SECONDS in one
batch, then drops each model's oldest rows beyond SERVED_LOG_MAX_ROWS. A feedback label is written onto its row
(``label``, ``labelled_at``) in the same batches. Postgres down: the batch is dropped and counted
(``predictor_served_log_rows_total{outcome="dropped"}``); serving never waits for it.

The table (created by the predictor when missing)::

    served_log(id, model_name, model_version, request_id, idx, served_at, inputs jsonb, prediction jsonb,
               label jsonb, labelled_at)

``inputs`` is the instance as the model received it: an object of feature columns, or the text of a text model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from datetime import UTC, datetime
from typing import Any

import orjson
from prometheus_client import Counter
from pydantic import Field

from mlops_common.settings import CommonSettings

log = logging.getLogger(__name__)

TABLE = "served_log"
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id BIGSERIAL PRIMARY KEY,
    model_name TEXT NOT NULL,
    model_version TEXT NOT NULL,
    request_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    served_at TIMESTAMPTZ NOT NULL,
    inputs JSONB NOT NULL,
    prediction JSONB NOT NULL,
    label JSONB,
    labelled_at TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS {TABLE}_model_id ON {TABLE} (model_name, id);
CREATE INDEX IF NOT EXISTS {TABLE}_request ON {TABLE} (model_name, request_id, idx);
"""
INSERT = (f"INSERT INTO {TABLE} (model_name, model_version, request_id, idx, served_at, inputs, prediction) "
          "VALUES (%s, %s, %s, %s, %s, %s, %s)")
LABEL = (f"UPDATE {TABLE} SET label = %s, labelled_at = %s "
         "WHERE model_name = %s AND request_id = %s AND idx = %s")
TRIM = (f"DELETE FROM {TABLE} WHERE model_name = %s AND id <= "
        f"(SELECT id FROM {TABLE} WHERE model_name = %s ORDER BY id DESC OFFSET %s LIMIT 1)")

ROWS = Counter("predictor_served_log_rows_total",
               "Served instances offered to the served log, by what became of them", ["model_name", "outcome"])


def _dumps(value: Any) -> str:
    """JSON as the predictor answers it (numpy scalars included)."""
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()


class ServedLogSettings(CommonSettings):
    # postgresql://user:password@host/db; empty: no served log.
    served_log_database_url: str = ""
    # Share of requests logged (all instances of a logged request).
    served_log_sample: float = Field(1.0, ge=0, le=1)
    # Rows kept per model; the oldest go first.
    served_log_max_rows: int = Field(100_000, ge=1)
    served_log_flush_seconds: float = Field(1.0, gt=0)
    # Rows waiting in memory at most (beyond: dropped and counted).
    served_log_buffer_rows: int = Field(20_000, ge=1)


class ServedLog:
    def __init__(self, settings: ServedLogSettings) -> None:
        self.settings = settings
        self.rows: deque[tuple[Any, ...]] = deque()
        self.labels: deque[tuple[Any, ...]] = deque()
        self.models: set[str] = set()
        self.task: asyncio.Task[None] | None = None
        self.stopping = asyncio.Event()
        self.users = 0
        self.conn: Any = None

    # the request path
    def record(self, model_name: str, request_id: str, version: str, inputs: list[Any],
               predictions: list[Any]) -> None:
        if self.settings.served_log_sample < 1 and random.random() >= self.settings.served_log_sample:
            return
        if len(self.rows) + len(inputs) > self.settings.served_log_buffer_rows:
            ROWS.labels(model_name, "dropped").inc(len(inputs))
            return
        now = datetime.now(UTC)
        for i, (row, prediction) in enumerate(zip(inputs, predictions, strict=False)):
            self.rows.append((model_name, version, request_id, i, now, row, prediction))
        self.models.add(model_name)

    def label(self, model_name: str, request_id: str, index: int, label: Any) -> None:
        if len(self.labels) < self.settings.served_log_buffer_rows:
            self.labels.append((label, datetime.now(UTC), model_name, request_id, index))

    # the background writer
    def start(self) -> None:
        self.users += 1
        if self.task is None:
            self.stopping = asyncio.Event()
            self.task = asyncio.get_running_loop().create_task(self._loop(), name="served-log")

    async def stop(self) -> None:
        """The last user's stop writes what is left (a flush under way is never cut off) and disconnects."""
        self.users -= 1
        if self.users > 0 or self.task is None:
            return
        self.stopping.set()
        with contextlib.suppress(Exception):
            await self.task
        self.task = None
        if self.conn is not None:
            with contextlib.suppress(Exception):
                await self.conn.close()
            self.conn = None

    async def _connection(self) -> Any:
        if self.conn is None or self.conn.closed:
            import psycopg

            self.conn = await psycopg.AsyncConnection.connect(self.settings.served_log_database_url,
                                                              autocommit=True, connect_timeout=5)
            await self.conn.execute(SCHEMA)
        return self.conn

    async def flush(self) -> None:
        if not self.rows and not self.labels:
            return
        rows = [self.rows.popleft() for _ in range(len(self.rows))]
        labels = [self.labels.popleft() for _ in range(len(self.labels))]
        try:
            from psycopg.types.json import Jsonb

            conn = await self._connection()
            async with conn.transaction(), conn.cursor() as cur:
                if rows:
                    await cur.executemany(INSERT, [(*r[:5], Jsonb(r[5], _dumps), Jsonb(r[6], _dumps)) for r in rows])
                if labels:
                    await cur.executemany(LABEL, [(Jsonb(lb[0], _dumps), *lb[1:]) for lb in labels])
                for model in {r[0] for r in rows}:
                    await cur.execute(TRIM, (model, model, self.settings.served_log_max_rows))
        except Exception as exc:  # noqa: BLE001 - the log is best effort: serving goes on
            for model in {r[0] for r in rows}:
                ROWS.labels(model, "dropped").inc(sum(1 for r in rows if r[0] == model))
            log.warning("served log: %d rows and %d labels not written: %s", len(rows), len(labels), exc)
            if self.conn is not None:
                with contextlib.suppress(Exception):
                    await self.conn.close()
                self.conn = None
            return
        for model in {r[0] for r in rows}:
            ROWS.labels(model, "stored").inc(sum(1 for r in rows if r[0] == model))

    async def _loop(self) -> None:
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.settings.served_log_flush_seconds)
            try:
                await self.flush()
            except Exception as exc:  # noqa: BLE001 - a background loop must not die
                log.warning("served log flush failed: %s", exc)


_shared: ServedLog | None = None
_read = False


def shared() -> ServedLog | None:
    """This process's served log (one writer for every model it serves), or None when it is off."""
    global _shared, _read
    if not _read:
        settings = ServedLogSettings()
        _read = True
        if not settings.served_log_database_url:
            return None
        try:
            import psycopg  # noqa: F401
        except ImportError:
            log.error("SERVED_LOG_DATABASE_URL is set but psycopg is not installed: no served log")
            return None
        _shared = ServedLog(settings)
    return _shared
