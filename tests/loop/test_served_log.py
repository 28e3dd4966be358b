"""The predictor's served log against a real Postgres: rows written off the request path in batches, sampled,
bounded per model (oldest dropped), feedback labels joined onto their rows, and Postgres down costs rows, not
requests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import psycopg
import pytest

from predictor.servedlog import ServedLog, ServedLogSettings
from tests.support import processes as p


@pytest.fixture()
def database() -> Iterator[str]:
    with p.postgres_database("mlops_test_servedlog") as url:
        yield url


def rows(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT model_name, model_version, request_id, idx, inputs, prediction, label "
                            "FROM served_log ORDER BY id").fetchall()


def served(url: str, **settings: object) -> ServedLog:
    return ServedLog(ServedLogSettings(served_log_database_url=url, served_log_flush_seconds=0.05, **settings))


def test_rows_are_written_in_batches_and_labels_joined(database: str) -> None:
    async def scenario() -> None:
        log = served(database)
        log.start()
        log.record("fares", "req-1", "3", [{"distance_km": 2.0}, {"distance_km": 5.5}], [7.5, 15.0])
        log.record("spam", "req-2", "1", ["WIN cash now"], ["spam"])
        # Nothing is written on the request path: the rows wait for the writer.
        assert len(log.rows) == 3
        await asyncio.sleep(0.3)
        log.label("fares", "req-1", 1, 16.25)
        log.label("spam", "req-2", 0, "spam")
        log.label("spam", "never-served", 0, "ham")  # feedback for a row not logged changes nothing
        await log.stop()

    asyncio.run(scenario())
    assert rows(database) == [
        ("fares", "3", "req-1", 0, {"distance_km": 2.0}, 7.5, None),
        ("fares", "3", "req-1", 1, {"distance_km": 5.5}, 15.0, 16.25),
        ("spam", "1", "req-2", 0, "WIN cash now", "spam", "spam"),
    ]


def test_sampling_and_the_bound_per_model(database: str) -> None:
    async def scenario() -> None:
        none = served(database, served_log_sample=0.0)
        none.start()
        for i in range(20):
            none.record("fares", f"skipped-{i}", "1", [{"x": i}], [float(i)])
        await none.stop()
        bounded = served(database, served_log_max_rows=5)
        bounded.start()
        for i in range(12):
            bounded.record("fares", f"r-{i}", "2", [{"x": i}], [float(i)])
            if i % 4 == 3:
                await asyncio.sleep(0.2)
        bounded.record("spam", "s-0", "1", ["hi"], ["ham"])
        await bounded.stop()

    asyncio.run(scenario())
    kept = rows(database)
    assert [r[2] for r in kept if r[0] == "fares"] == [f"r-{i}" for i in range(7, 12)]  # the 5 newest
    assert [r[2] for r in kept if r[0] == "spam"] == ["s-0"]  # another model's rows are its own


def test_postgres_down_drops_the_batch_and_serving_goes_on() -> None:
    async def scenario() -> ServedLog:
        log = served(f"postgresql://postgres@127.0.0.1:{p.free_port()}/nowhere")
        log.start()
        log.record("fares", "r", "1", [{"x": 1}], [1.0])
        await asyncio.sleep(0.3)
        await log.stop()
        return log

    log = asyncio.run(scenario())
    assert not log.rows
