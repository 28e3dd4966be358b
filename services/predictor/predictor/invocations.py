"""MLflow's scoring protocol on /invocations, answered by the served version's pyfunc model.

Parsing and schema enforcement are MLflow's own (``infer_and_parse_data``, ``parse_csv_input`` and
``PyFuncModel.predict``), so a client of ``mlflow models serve`` gets the same answers here. For text models
whose input is exactly the one string column, the texts go through the micro-batcher like /predict (the
pyfunc wrapper would call the same ``pipeline.predict`` on the same strings); the two common JSON shapes of
such input are read straight from the JSON, without a DataFrame. Anything else, and any input that does not
fit that shape, is parsed by MLflow and scored by the pyfunc model itself, one request per call. Refusals of
the protocol answer in MLflow's error shape (:class:`ProtocolError`).
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import MutableMapping
from typing import Any

import numpy as np
import orjson
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.pyfunc.scoring_server import SUPPORTED_FORMATS, infer_and_parse_data, parse_csv_input

from mlops_common.errors import ServiceError
from predictor.batching import ModelError
from predictor.errors import not_serving
from predictor.inputs import TextInputs
from predictor.loading import LoadedModel

JSON = "application/json"
CSV = "text/csv"
MAX_MESSAGE_CHARS = 2000


class ProtocolError(ServiceError):
    """A refusal of MLflow's scoring protocol, answered in MLflow's shape ``{"error_code", "message"}`` (plus
    ``detail``, the shape of every other answer). MLflow's messages name the failing column at their end, so
    they are kept whole (up to 2,000 characters) rather than cut like other echoes."""

    error_code = "BAD_REQUEST"

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message[:MAX_MESSAGE_CHARS], status_code=status)

    @property
    def message(self) -> str:
        return self.detail

    def body(self) -> bytes:
        text = self.detail.encode("utf-8", "backslashreplace").decode("utf-8")
        return orjson.dumps({"error_code": self.error_code, "message": text, "detail": text})


def media_type(content_type: str) -> str:
    """JSON or CSV, from an /invocations Content-Type (JSON when absent); 415 for anything else or a charset
    other than UTF-8."""
    mime, _, parameters = content_type.partition(";")
    mime = mime.strip().lower() or JSON
    charset = "utf-8"
    for pair in parameters.split(";"):
        key, _, value = pair.strip().partition("=")
        if key.strip().lower() == "charset":
            charset = value.strip().lower()
    if charset not in ("utf-8", "utf8"):
        raise ProtocolError(415, "the scoring protocol supports UTF-8 only")
    if mime not in (JSON, CSV):
        raise ProtocolError(415, f"content type {mime!r} is not supported: send {JSON} or {CSV}")
    return mime


def json_object(body: bytes) -> dict[str, Any]:
    """The decoded JSON body of an /invocations request, which must be an object (400 otherwise)."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(400, f"malformed JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise ProtocolError(400, f"the body must be a JSON object with one of the keys {sorted(SUPPORTED_FORMATS)}")
    return payload


def parse(mime: str, body: bytes, payload: dict[str, Any] | None,
          model: LoadedModel) -> tuple[Any, dict[str, Any] | None]:
    """The input frame and params of an /invocations request: ``body`` when ``mime`` is CSV, else ``payload``
    (the JSON object already decoded from it), both by MLflow's own parsing."""
    try:
        if mime == CSV:
            return parse_csv_input(io.StringIO(body.decode("utf-8")), schema=model.input_schema), None
        assert payload is not None
        data = {k: v for k, v in payload.items() if k in SUPPORTED_FORMATS}
        if len(data) != 1:
            raise ProtocolError(400, f"send exactly one of {sorted(SUPPORTED_FORMATS)}; got keys {sorted(payload)}")
        return infer_and_parse_data(data, model.input_schema), payload.get("params")
    except UnicodeDecodeError as exc:
        raise ProtocolError(400, f"the body is not valid UTF-8: {exc}") from exc
    except MlflowException as exc:
        raise ProtocolError(400, exc.message) from exc
    except ProtocolError:
        raise
    except Exception as exc:
        raise ProtocolError(400, f"could not parse the input: {type(exc).__name__}: {exc}") from exc


def score(model: LoadedModel, frame: Any, params: dict[str, Any] | None) -> bytes:
    try:
        raw = model.pyfunc.predict(frame, params=params) if params else model.pyfunc.predict(frame)
    except MlflowException as exc:
        raise ProtocolError(400, exc.message) from exc
    except Exception as exc:
        raise ProtocolError(400, f"the model could not score this input: {type(exc).__name__}: {exc}") from exc
    return orjson.dumps({"predictions": jsonable(raw)}, option=orjson.OPT_SERIALIZE_NUMPY)


def jsonable(raw: Any) -> Any:
    """A pyfunc prediction as ``mlflow models serve`` answers it (``scoring_server.predictions_to_json``): an
    array as a list, a DataFrame or Series as records, anything else as it is. Done here rather than through
    that function, which writes with the standard json module (NaN, spacing, speed differ from orjson)."""
    if isinstance(raw, np.ndarray):
        return raw.tolist()
    if isinstance(raw, pd.DataFrame):
        return raw.to_dict(orient="records")
    if isinstance(raw, pd.Series):
        return pd.DataFrame(raw).to_dict(orient="records")
    return raw


def rows_of(frame: Any) -> int:
    try:
        return len(frame)
    except TypeError:
        return 1


def _batched_texts(model: LoadedModel, frame: Any, params: dict[str, Any] | None) -> list[str] | None:
    """The texts of a text model's input frame when it has exactly the expected shape, else None."""
    if params or not isinstance(model.inputs, TextInputs) or not hasattr(frame, "columns"):
        return None
    if list(frame.columns) != [model.inputs.column]:
        return None
    texts = frame[model.inputs.column].tolist()
    return texts if all(type(t) is str for t in texts) else None


def fast_texts(payload: dict[str, Any], model: LoadedModel) -> list[str] | None:
    """The texts of the two common JSON shapes for a text model, read without building a DataFrame:
    ``{"dataframe_split": {"columns": [col], "data": [[text], ...]}}`` and
    ``{"dataframe_records": [{col: text}, ...]}``. None for anything else (params, other keys or columns,
    a non-string value), which then takes MLflow's own parsing and its error messages."""
    if not isinstance(model.inputs, TextInputs) or len(payload) != 1:
        return None
    column = model.inputs.column
    if isinstance(split := payload.get("dataframe_split"), dict):
        if split.get("columns") != [column] or not set(split) <= {"columns", "data", "index"}:
            return None
        data = split.get("data")
        if not isinstance(data, list) or not all(isinstance(row, list) and len(row) == 1 for row in data):
            return None
        texts = [row[0] for row in data]
    elif isinstance(records := payload.get("dataframe_records"), list):
        if not all(isinstance(rec, dict) and len(rec) == 1 and column in rec for rec in records):
            return None
        texts = [rec[column] for rec in records]
    else:
        return None
    return texts if all(type(t) is str for t in texts) else None


async def handle(svc: Any, cfg: Any, body: bytes, content_type: str,
                 scope: MutableMapping[str, Any] | None = None) -> bytes:
    """One /invocations request: its JSON answer; raises :class:`ProtocolError` (or ``not_serving``) for a
    refusal. ``scope`` is the ASGI scope when the request was counted as arriving (by the fast path), so the
    micro-batcher knows when it has reached the queue."""
    model = svc.model
    if model is None:
        raise not_serving(svc.name)
    mime = media_type(content_type)
    payload = json_object(body) if mime == JSON else None
    texts = fast_texts(payload, model) if payload is not None and svc.batcher is not None else None
    frame = params = None
    if texts is None:
        frame, params = parse(mime, body, payload, model)
    rows = len(texts) if texts is not None else rows_of(frame)
    if rows > cfg.max_instances:
        raise ProtocolError(422, f"at most {cfg.max_instances} rows per request, got {rows}")
    if rows == 0:
        raise ProtocolError(422, "the input holds no rows")
    if texts is None:
        texts = _batched_texts(model, frame, params)
    if scope is not None:  # parsed: from here it is either queued or not coming to the batcher at all
        svc.arrivals.queued(scope)
    if texts is not None and svc.batcher is not None:
        try:
            _, values, _ = await svc.batcher.submit(texts, False, model)
        except ModelError as exc:
            raise ProtocolError(400, str(exc)) from None
        return orjson.dumps({"predictions": values})
    if rows <= cfg.inline_predict_max_rows:
        return score(model, frame, params)
    return await asyncio.to_thread(score, model, frame, params)
