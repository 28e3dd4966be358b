"""Unit tests of the predictor's pure parts: input validation and the micro-batcher (no services)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from mlflow.models import infer_signature

from predictor.batching import Arrivals, MicroBatcher, ModelError
from predictor.inputs import InputError, RecordInputs, TextInputs, check_list, inputs_for_schema


def test_schema_of_one_string_column_means_text() -> None:
    import pandas as pd

    text = inputs_for_schema(infer_signature(pd.DataFrame({"message": ["a"]})).inputs)
    assert isinstance(text, TextInputs) and text.column == "message"
    assert text.validate(["a", "b"]) == ["a", "b"]
    assert text.validate([{"message": "a"}, "b"]) == ["a", "b"]
    with pytest.raises(InputError) as err:
        text.validate(["a", {"other": "x"}])
    assert err.value.field == "instances[1].message"

    frame = pd.DataFrame({"km": [1.5], "n": [2], "vendor": ["a"], "flag": [True]})
    records = inputs_for_schema(infer_signature(frame).inputs)
    assert isinstance(records, RecordInputs) and records.names == ["km", "n", "vendor", "flag"]
    ok = [{"km": 1, "n": 2.0, "vendor": "b", "flag": False, "extra": "ignored"}]
    assert records.validate(ok) is ok
    for bad, field in (({"km": True, "n": 1, "vendor": "a", "flag": True}, "instances[0].km"),
                       ({"km": 1.0, "n": 1, "vendor": "a"}, "instances[0].flag"),
                       ({"km": 1.0, "n": 1, "vendor": None, "flag": True}, "instances[0].vendor")):
        with pytest.raises(InputError) as err:
            records.validate([bad])
        assert err.value.field == field
    assert list(records.frame(ok).columns) == ["km", "n", "vendor", "flag"]


def test_check_list_limits() -> None:
    with pytest.raises(InputError, match="at least one"):
        check_list([], 3)
    with pytest.raises(InputError, match="at most 3"):
        check_list([1, 2, 3, 4], 3)
    with pytest.raises(InputError, match="expected a list"):
        check_list({"a": 1}, 3)


class FakeModel:
    def __init__(self) -> None:
        self.calls: list[int] = []
        self.inputs = TextInputs("text")
        self.version = "1"

    def predict(self, rows: list[Any], probabilities: bool = False) -> tuple[list[Any], Any]:
        if "boom" in rows:
            raise ValueError("cannot score boom")
        self.calls.append(len(rows))
        return [r.upper() for r in rows], None


def run_jobs(model: FakeModel, jobs: list[list[str]], max_batch_size: int = 64) -> list[Any]:
    async def main() -> list[Any]:
        arrivals = Arrivals()
        batcher = MicroBatcher(lambda: model, lambda *a: None, max_batch_size, 0.01, 256, arrivals)
        batcher.start()
        futures = [batcher.submit(rows, False, model) for rows in jobs]
        results = await asyncio.gather(*futures, return_exceptions=True)
        await batcher.stop()
        return results

    return asyncio.run(main())


def test_concurrent_requests_share_one_predict_call() -> None:
    model = FakeModel()
    results = run_jobs(model, [["a"], ["b", "c"], ["d"]])
    assert [r[1] for r in results] == [["A"], ["B", "C"], ["D"]]
    assert model.calls == [4]


def test_batches_respect_the_maximum_size_but_never_split_a_request() -> None:
    model = FakeModel()
    run_jobs(model, [["a", "b"], ["c", "d"], ["e"], ["f", "g", "h", "i"]], max_batch_size=3)
    assert model.calls == [2, 3, 4]


def test_a_request_the_model_cannot_score_fails_alone() -> None:
    model = FakeModel()
    results = run_jobs(model, [["a"], ["boom"], ["c"]])
    assert results[0][1] == ["A"] and results[2][1] == ["C"]
    assert isinstance(results[1], ModelError) and "cannot score boom" in str(results[1])
