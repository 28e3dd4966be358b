"""MLflow's scoring protocol on /invocations, answered by the served version's pyfunc model.

Parsing and schema enforcement are MLflow's own (``infer_and_parse_data``, ``parse_csv_input``,
``parse_parquet_input`` and ``PyFuncModel.predict``), and refusals carry the status, ``error_code`` and message
``mlflow models serve`` gives (``mlflow.pyfunc.scoring_server.invocations``), so its clients get the same answers
here. For text models whose input is exactly the one string column, the texts go through the micro-batcher like
/predict (the pyfunc wrapper would call the same ``pipeline.predict`` on the same strings); the two common JSON
shapes of such input are read straight from the JSON, without a DataFrame. Anything else, and any input that
does not fit that shape (empty input included), is parsed by MLflow and scored by the pyfunc model itself, one
request per call. Refusals of the protocol answer in MLflow's error shape (:class:`ProtocolError`), as JSON even
where MLflow answers plain text (415).
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
from mlflow.pyfunc.scoring_server import (
    CONTENT_TYPE_PARQUET,
    CONTENT_TYPES,
    REQUIRED_INPUT_FORMAT,
    SCORING_PROTOCOL_CHANGE_INFO,
    SERVING_PARAMS_KEY,
    SUPPORTED_FORMATS,
    infer_and_parse_data,
    parse_csv_input,
    parse_parquet_input,
)

from mlops_common.errors import ServiceError
from predictor.batching import ModelError
from predictor.errors import not_serving
from predictor.inputs import TextInputs
from predictor.loading import LoadedModel
from predictor.routing import SERVED

JSON = "application/json"
CSV = "text/csv"
PARQUET = CONTENT_TYPE_PARQUET
MAX_MESSAGE_CHARS = 2000
UNEXPECTED_ERROR = ("Encountered an unexpected error while evaluating the model. Verify that the serialized input "
                    "Dataframe is compatible with the model for inference.")


class ProtocolError(ServiceError):
    """A refusal of MLflow's scoring protocol, answered in MLflow's shape ``{"error_code", "message"}`` (plus
    ``detail``, the shape of every other answer). MLflow's messages name the failing column at their end, so
    they are kept whole (up to 2,000 characters) rather than cut like other echoes."""

    def __init__(self, status: int, message: str, error_code: str = "BAD_REQUEST") -> None:
        super().__init__(message[:MAX_MESSAGE_CHARS], status_code=status)
        self.error_code = error_code

    @classmethod
    def of(cls, exc: MlflowException) -> ProtocolError:
        """MLflow's own refusal, with its status and error code (a 400 where MLflow would answer a 5xx)."""
        status = exc.get_http_status_code()
        return cls(status if 400 <= status < 500 else 400, exc.message, exc.error_code)

    @property
    def message(self) -> str:
        return self.detail

    def body(self) -> bytes:
        text = self.detail.encode("utf-8", "backslashreplace").decode("utf-8")
        return orjson.dumps({"error_code": self.error_code, "message": text, "detail": text})


def media_type(content_type: str) -> str:
    """JSON, CSV or Parquet, from an /invocations Content-Type (JSON when absent); 415, as MLflow, for a
    charset other than UTF-8, any other parameter, or any other type. Media types and parameter names are
    matched without regard to case, and an empty parameter is ignored (MLflow refuses both)."""
    if content_type == JSON or not content_type:
        return JSON
    mime, *parameters = content_type.split(";")
    unknown = []
    for parameter in parameters:
        key, _, value = parameter.partition("=")
        key = key.strip().lower()
        if key == "charset":
            if value.strip().strip('"').lower() != "utf-8":
                raise ProtocolError(415, "The scoring server only supports UTF-8")
        elif key:
            unknown.append(key)
    if unknown:
        raise ProtocolError(415, f"Unrecognized content type parameters: {', '.join(unknown)}. "
                                 f"{SCORING_PROTOCOL_CHANGE_INFO}")
    mime = mime.strip().lower() or JSON
    if mime not in CONTENT_TYPES:
        raise ProtocolError(415, f"This predictor only supports the following content types: Types: "
                                 f"{CONTENT_TYPES}. Got '{content_type}', which is not supported.")
    return mime


def json_object(body: bytes) -> dict[str, Any]:
    """The decoded JSON body of an /invocations request, which must be an object (400 otherwise). The messages
    are MLflow's (``_decode_json_input``), without its echo of the whole body."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(400, f"Invalid input. Ensure that input is a valid JSON formatted string. "
                                 f"Error: '{exc!r}'") from None
    if not isinstance(payload, dict):
        received = "a list" if isinstance(payload, list) else f"unexpected input type '{type(payload)}'"
        raise ProtocolError(400, f"Invalid input. {REQUIRED_INPUT_FORMAT}. Received {received}.")
    return payload


def parse(mime: str, body: bytes, payload: dict[str, Any] | None,
          model: LoadedModel) -> tuple[Any, dict[str, Any] | None]:
    """The input frame and params of an /invocations request: ``body`` when ``mime`` is CSV or Parquet, else
    ``payload`` (the JSON object already decoded from it), both by MLflow's own parsing."""
    try:
        if mime == CSV:
            return parse_csv_input(io.StringIO(body.decode("utf-8")), schema=model.input_schema), None
        if mime == PARQUET:
            return parse_parquet_input(io.BytesIO(body)), None
        assert payload is not None
        data = {k: v for k, v in payload.items() if k in SUPPORTED_FORMATS}
        return infer_and_parse_data(data, model.input_schema), payload.get(SERVING_PARAMS_KEY)
    except UnicodeDecodeError as exc:
        raise ProtocolError(400, f"Invalid input. Ensure that input is a valid UTF-8 encoded string. "
                                 f"Error: '{exc!r}'") from None
    except MlflowException as exc:
        raise ProtocolError.of(exc) from None
    except Exception as exc:
        raise ProtocolError(400, f"could not parse the input: {type(exc).__name__}: {exc}") from exc


def score(model: LoadedModel, frame: Any, params: dict[str, Any] | None) -> bytes:
    try:
        raw = model.pyfunc.predict(frame, params=params) if params else model.pyfunc.predict(frame)
    except MlflowException as exc:
        raise ProtocolError.of(exc) from None
    except Exception as exc:
        raise ProtocolError(400, f"{UNEXPECTED_ERROR} {type(exc).__name__}: {exc}") from exc
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
    """The texts of a text model's input frame when it has exactly the expected shape and at least one row,
    else None."""
    if params or not isinstance(model.inputs, TextInputs) or not hasattr(frame, "columns"):
        return None
    if list(frame.columns) != [model.inputs.column]:
        return None
    texts = frame[model.inputs.column].tolist()
    return texts if texts and all(type(t) is str for t in texts) else None


def fast_texts(payload: dict[str, Any], model: LoadedModel) -> list[str] | None:
    """The texts of the two common JSON shapes for a text model, read without building a DataFrame:
    ``{"dataframe_split": {"columns": [col], "data": [[text], ...]}}`` and
    ``{"dataframe_records": [{col: text}, ...]}``. None for anything else (params, other keys or columns,
    a non-string value, an ``index`` whose length is not the data's, no rows), which then takes MLflow's own
    parsing and its answers."""
    if not isinstance(model.inputs, TextInputs) or len(payload) != 1:
        return None
    column = model.inputs.column
    if isinstance(split := payload.get("dataframe_split"), dict):
        if split.get("columns") != [column] or not set(split) <= {"columns", "data", "index"}:
            return None
        data = split.get("data")
        if not isinstance(data, list) or not all(isinstance(row, list) and len(row) == 1 for row in data):
            return None
        if "index" in split and not (isinstance(index := split["index"], list) and len(index) == len(data)):
            return None
        texts = [row[0] for row in data]
    elif isinstance(records := payload.get("dataframe_records"), list):
        if not all(isinstance(rec, dict) and len(rec) == 1 and column in rec for rec in records):
            return None
        texts = [rec[column] for rec in records]
    else:
        return None
    return texts if texts and all(type(t) is str for t in texts) else None


async def handle(svc: Any, cfg: Any, body: bytes, content_type: str,
                 scope: MutableMapping[str, Any] | None = None) -> bytes:
    """One /invocations request: its JSON answer; raises :class:`ProtocolError` (or ``not_serving``) for a
    refusal. ``scope`` is the ASGI scope when the request was counted as arriving (by the fast path), so the
    micro-batcher knows when it has reached the queue."""
    model, batcher = (svc.model, svc.batcher) if svc.rollout is None else svc.pick(scope)
    if model is None:
        raise not_serving(svc.name)
    if scope is not None:
        scope[SERVED] = model.version
    mime = media_type(content_type)
    payload = json_object(body) if mime == JSON else None
    texts = fast_texts(payload, model) if payload is not None and batcher is not None else None
    frame = params = None
    if texts is None:
        frame, params = parse(mime, body, payload, model)
    rows = len(texts) if texts is not None else rows_of(frame)
    if rows > cfg.max_instances:
        raise ProtocolError(422, f"at most {cfg.max_instances} rows per request, got {rows}")
    if texts is None:
        texts = _batched_texts(model, frame, params)
    if scope is not None:  # parsed: from here it is either queued or not coming to the batcher at all
        svc.arrivals.queued(scope)
    if texts is not None and batcher is not None:
        try:
            _, values, _ = await batcher.submit(texts, False, model)
        except ModelError as exc:
            raise ProtocolError(400, str(exc)) from None
        return orjson.dumps({"predictions": values})
    if rows <= cfg.inline_predict_max_rows:
        return score(model, frame, params)
    return await asyncio.to_thread(score, model, frame, params)
