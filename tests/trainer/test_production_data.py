"""Production datasets against a real Postgres: the predictor's served log (written by its own writer) becomes
a content-addressed snapshot of the labelled rows in a window, with the spec's columns and its lineage, and a
spec's ``retrain`` block says when a retrain uses it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import psycopg
import pytest

from mlops_common.spec import ModelSpec
from predictor.servedlog import ServedLog, ServedLogSettings
from tests.support import processes as p
from trainer import production
from trainer.datasets import DatasetError, DatasetStore

FARES = ModelSpec.model_validate({
    "name": "fares", "task": "tabular-regression",
    "data": {"uri": "data/taxi_fares.csv", "feature_columns": ["distance_km", "passengers"],
             "target_column": "fare"}})
SPAM = ModelSpec.model_validate({
    "name": "spam", "task": "text-classification",
    "data": {"uri": "data/sms_spam.csv", "text_column": "text", "label_column": "label"}})


@pytest.fixture()
def served_log() -> Iterator[str]:
    """A served log: fares served by v1 (labelled or not, one of them 10 days old) and v2, spam text by v3."""
    with p.postgres_database("mlops_test_production") as url:
        async def serve() -> None:
            log = ServedLog(ServedLogSettings(served_log_database_url=url, served_log_flush_seconds=0.05))
            log.start()
            for i in range(6):
                log.record("fares", f"f{i}", "1" if i < 4 else "2", [{"distance_km": float(i), "passengers": 1}],
                           [3.0 + i])
            log.record("fares", "f-unlabelled", "2", [{"distance_km": 9.0, "passengers": 2}], [20.0])
            log.record("spam", "s0", "3", ["WIN a prize now"], ["spam"])
            log.record("spam", "s1", "3", ["see you at lunch"], ["spam"])
            await asyncio.sleep(0.3)
            for i in range(6):
                log.label("fares", f"f{i}", 0, 5.0 + 2 * i)
            log.label("spam", "s0", 0, "spam")
            log.label("spam", "s1", 0, "ham")  # the model was wrong: the label is what counts
            await log.stop()

        asyncio.run(serve())
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("UPDATE served_log SET served_at = now() - interval '10 days' WHERE request_id = 'f0'")
        yield url


def store(tmp_path: Path, url: str) -> DatasetStore:
    return DatasetStore(tmp_path / "datasets", [tmp_path], 10_000_000, allowed_hosts=[], served_log_url=url)


def test_labelled_rows_in_the_window_become_a_snapshot_with_lineage(served_log: str, tmp_path: Path) -> None:
    datasets = store(tmp_path, served_log)
    snap = datasets.snapshot("production:fares?days=7", FARES)
    frame = datasets.load(snap)
    # Labelled rows only, within 7 days (f0 is older), oldest first, with the spec's columns.
    assert list(frame.columns) == ["distance_km", "passengers", "fare"]
    assert frame["distance_km"].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert frame["fare"].tolist() == [7.0, 9.0, 11.0, 13.0, 15.0]
    lineage = snap.lineage
    assert lineage is not None and lineage["versions"] == {"1": 3, "2": 2} and lineage["rows"] == 5
    assert lineage["window"]["days"] == 7 and lineage["window"]["rows"] is None
    # Content-addressed like an upload: the same rows are the same snapshot, found by its id later.
    assert datasets.snapshot("production:fares?days=7", FARES).sha256 == snap.sha256
    assert datasets.get(snap.sha256).lineage == lineage  # type: ignore[union-attr]
    assert snap.public()["lineage"] == lineage

    newest = datasets.load(datasets.snapshot("production:fares?rows=2", FARES))
    assert newest["distance_km"].tolist() == [4.0, 5.0]
    text = datasets.load(datasets.snapshot("production:spam?days=1", SPAM))
    assert text.to_dict("records") == [{"text": "WIN a prize now", "label": "spam"},
                                       {"text": "see you at lunch", "label": "ham"}]


def test_both_puts_the_reference_rows_first(served_log: str, tmp_path: Path) -> None:
    reference = tmp_path / "reference.csv"
    pd.DataFrame({"distance_km": [10.0, 11.0], "passengers": [1, 2], "fare": [30.0, 33.0],
                  "extra": ["a", "b"]}).to_csv(reference, index=False)
    datasets = store(tmp_path, served_log)
    spec = FARES.model_copy(update={"data": FARES.data.model_copy(update={"uri": str(reference)}),
                                    "retrain": FARES.retrain.model_copy(update={"data": "both", "window_days": 7,
                                                                                "max_rows": 3})})
    uri = production.uri_for(spec)
    assert uri.startswith("production:fares?days=7&rows=3&reference=")
    snap = datasets.snapshot(uri, spec)
    assert datasets.load(snap)["distance_km"].tolist() == [10.0, 11.0, 3.0, 4.0, 5.0]
    assert snap.lineage["reference"]["rows"] == 2 and snap.lineage["production_rows"] == 3  # type: ignore[index]
    # The reference data alone is what a spec without a retrain block trains on.
    assert production.uri_for(FARES) == FARES.data.uri


def test_refusals_say_why(served_log: str, tmp_path: Path) -> None:
    datasets = store(tmp_path, served_log)
    for uri, reason in (("production:fares", "needs a window"), ("production:?days=1", "does not name a model"),
                        ("production:fares?days=-1", "must be positive"), ("production:fares?day=1", "unknown"),
                        ("production:fares?days=1&reference=production:x?days=1", "not another production")):
        with pytest.raises(DatasetError, match=reason):
            datasets.check_uri(uri)
    with pytest.raises(DatasetError, match="no labelled rows served by 'nobody'"):
        datasets.snapshot("production:nobody?days=7", FARES)
    with pytest.raises(DatasetError, match="SERVED_LOG_DATABASE_URL"):
        store(tmp_path, "").check_uri("production:fares?days=7")
    with pytest.raises(DatasetError, match="could not read the served log"):
        store(tmp_path, f"postgresql://postgres@127.0.0.1:{p.free_port()}/x").snapshot("production:fares?rows=5", FARES)
