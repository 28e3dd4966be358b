"""Open Inference Protocol v2 (the REST protocol of KServe, Triton and MLServer) over the served version.

The served version is the protocol's one model: its name is ``MODEL_NAME`` and its one version the version
holding the ``production`` alias. Its metadata comes from the MLflow signature: a text model takes one
``BYTES`` tensor (the text column), a tabular model one tensor per column (``FP64`` for doubles, ``INT64``
for longs, ``BYTES`` for strings...), each of shape ``[-1]``. It answers ``predictions`` (typed by the output
signature) and, for classifiers on request, ``probabilities`` (``FP64``, shape ``[-1, classes]``).

Inputs arrive as JSON ``data`` (flat or nested) or, as ``tritonclient`` sends them by default, as binary data
after the JSON header (Triton's binary tensor extension); answers are JSON. A request is scored by the
service's micro-batcher, as ``/predict`` is. Refusals are ``ServiceError``s; the v2 routes render them in the
protocol's shape ``{"error": "..."}`` (:func:`error_response`).
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Mapping, MutableMapping
from typing import Any

import numpy as np
import orjson
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlops_common.errors import BadRequest, NotFound, ServiceError, safe
from predictor.batching import MicroBatcher, ModelError
from predictor.catalog import ModelCatalog
from predictor.errors import not_serving
from predictor.inputs import AnyInputs, InputError, TextInputs
from predictor.loading import LoadedModel
from predictor.routing import SERVED
from predictor.service import PredictorService

PLATFORM = "mlflow_sklearn"
PREDICTIONS = "predictions"
PROBABILITIES = "probabilities"
HEADER_LENGTH = "inference-header-content-length"

# MLflow column types as v2 datatypes.
COLUMN_DATATYPES = {"double": "FP64", "float": "FP32", "long": "INT64", "integer": "INT32", "boolean": "BOOL",
                    "string": "BYTES", "binary": "BYTES", "datetime": "BYTES"}
# Fixed-size datatypes as little-endian numpy types (binary tensor data).
NUMERIC = {"BOOL": "?", "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8", "INT8": "<i1",
           "INT16": "<i2", "INT32": "<i4", "INT64": "<i8", "FP16": "<f2", "FP32": "<f4", "FP64": "<f8"}
DATATYPES = frozenset({*NUMERIC, "BYTES"})


class ProtocolError(BaseModel):
    error: str


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    version: str
    ready: bool


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 for a dimension of any size (the instances)")
    parameters: dict[str, Any] | None = None


class ModelMetadata(BaseModel):
    name: str
    versions: list[str] = Field(description="The served version")
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, Any] | None = None


class RequestInput(BaseModel):
    model_config = ConfigDict(strict=True)

    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = Field(None, description="Row-major, flat or nested; absent when sent as binary data")


class RequestOutput(BaseModel):
    model_config = ConfigDict(strict=True)

    name: str
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    model_config = ConfigDict(strict=True)

    id: str | None = None
    parameters: dict[str, Any] | None = Field(None, description='{"probabilities": true} adds the probabilities')
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = Field(None, description="Outputs to answer (all but probabilities when "
                                                                  "absent)")


class ResponseOutput(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] | None = None
    data: list[Any]


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    parameters: dict[str, Any] | None = Field(None, description="request_id: send it with POST /feedback")
    outputs: list[ResponseOutput]


def error_body(detail: Any) -> bytes:
    """The protocol's error shape, ``{"error": "..."}``."""
    message = detail if isinstance(detail, str) else str(safe(detail))
    return orjson.dumps({"error": message.encode("utf-8", "backslashreplace").decode("utf-8")})


def error_response(status: int, detail: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(error_body(detail), status_code=status, headers=dict(headers or {}),
                    media_type="application/json")


def served(catalog: ModelCatalog, name: str, version: str | None = None) -> LoadedModel:
    """The served version if it is the one asked for: 404 for another model or version, 503 while nothing is
    served."""
    service = catalog.get(name)
    model = service.model
    if model is None:
        raise not_serving(service.name)
    if version is not None and version != model.version:
        raise NotFound(f"model {name!r} has no version {version!r} served: it serves version {model.version}")
    return model


def _dtype_datatype(dtype: Any) -> str:
    kind, bits = np.dtype(dtype).kind, np.dtype(dtype).itemsize * 8
    if kind == "b":
        return "BOOL"
    if kind in "iuf":
        return f"{'INT' if kind == 'i' else 'UINT' if kind == 'u' else 'FP'}{bits}"
    return "BYTES"


def _value_datatype(value: Any) -> str:
    return {str: "BYTES", bool: "BOOL", int: "INT64", float: "FP64"}.get(type(value), "BYTES")


def input_tensors(model: LoadedModel) -> list[TensorMetadata]:
    if isinstance(model.inputs, TextInputs):
        return [TensorMetadata(name=model.inputs.column, datatype="BYTES", shape=[-1])]
    return [TensorMetadata(name=c.name, datatype=COLUMN_DATATYPES.get(c.type, "BYTES"), shape=[-1],
                           parameters=None if c.required else {"required": False})
            for c in model.inputs.columns]


def prediction_datatype(model: LoadedModel) -> str:
    """From the output signature when it has one typed output, else from the classes (FP64 for regressors)."""
    schema = model.pyfunc.metadata.get_output_schema() if model.pyfunc is not None else None
    specs = getattr(schema, "inputs", None) or []
    if len(specs) == 1:
        kind = getattr(specs[0], "type", None)
        if isinstance(kind, np.dtype):
            return _dtype_datatype(kind)
        column_type = getattr(kind, "name", None)
        if column_type in COLUMN_DATATYPES:
            return COLUMN_DATATYPES[column_type]
    if model.classes:
        return _value_datatype(model.classes[0])
    return "FP64"


def output_tensors(model: LoadedModel) -> list[TensorMetadata]:
    outputs = [TensorMetadata(name=PREDICTIONS, datatype=prediction_datatype(model), shape=[-1])]
    if model.classes is not None:
        outputs.append(TensorMetadata(name=PROBABILITIES, datatype="FP64", shape=[-1, len(model.classes)],
                                      parameters={"classes": [str(c) for c in model.classes]}))
    return outputs


def metadata(model: LoadedModel) -> ModelMetadata:
    return ModelMetadata(name=model.name, versions=[model.version], platform=PLATFORM,
                         inputs=input_tensors(model), outputs=output_tensors(model),
                         parameters={"task": model.task})


def _sentence(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ())) or 'body'}: {e.get('msg')}"
                     for e in exc.errors(include_input=False, include_url=False))


def _binary(tensor: RequestInput, chunk: bytes) -> list[Any]:
    if tensor.datatype != "BYTES":
        dtype = np.dtype(NUMERIC[tensor.datatype])
        if len(chunk) % dtype.itemsize:
            raise BadRequest(f"input {tensor.name!r}: {len(chunk)} bytes of binary data is not a whole number of "
                             f"{tensor.datatype} elements")
        return np.frombuffer(chunk, dtype=dtype).tolist()
    values: list[Any] = []
    at = 0
    while at < len(chunk):
        if at + 4 > len(chunk):
            raise BadRequest(f"input {tensor.name!r}: truncated BYTES element in its binary data")
        (size,) = struct.unpack_from("<I", chunk, at)
        at += 4
        if at + size > len(chunk):
            raise BadRequest(f"input {tensor.name!r}: truncated BYTES element in its binary data")
        try:
            values.append(chunk[at:at + size].decode("utf-8"))
        except UnicodeDecodeError:
            raise BadRequest(f"input {tensor.name!r}: a BYTES element is not UTF-8 text") from None
        at += size
    return values


def parse(body: bytes, header_length: str | None) -> InferRequest:
    """The request, with binary tensor data (after a JSON header of ``header_length`` bytes) read into
    ``data``."""
    header, rest = body, b""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise BadRequest(f"Inference-Header-Content-Length {header_length!r} does not fit a body of "
                             f"{len(body)} bytes")
        header, rest = body[:int(header_length)], body[int(header_length):]
    try:
        raw = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None
    try:
        request = InferRequest.model_validate(raw)
    except ValidationError as exc:
        raise BadRequest(f"not an inference request: {_sentence(exc)}") from None
    at = 0
    for tensor in request.inputs:
        size = (tensor.parameters or {}).get("binary_data_size")
        if size is None:
            continue
        if type(size) is not int or size < 0 or at + size > len(rest):
            raise BadRequest(f"input {tensor.name!r}: binary_data_size {size!r} does not fit the binary data")
        if tensor.data is not None:
            raise BadRequest(f"input {tensor.name!r}: both data and binary_data_size")
        if tensor.datatype not in DATATYPES:
            raise BadRequest(f"input {tensor.name!r}: unknown datatype {tensor.datatype!r}")
        tensor.data = _binary(tensor, rest[at:at + size])
        at += size
    if at != len(rest):
        raise BadRequest(f"{len(rest) - at} bytes of binary data after the JSON belong to no input")
    return request


def _flat(data: list[Any]) -> list[Any]:
    if not any(type(x) is list for x in data):
        return data
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if type(item) is list:
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _fits(datatype: str, value: Any) -> bool:
    if datatype == "BYTES":
        return type(value) is str
    if datatype == "BOOL":
        return type(value) is bool
    if datatype.startswith(("INT", "UINT")):
        return type(value) is int
    return type(value) is int or type(value) is float


def _type_name(value: Any) -> str:
    return {str: "a string", bool: "a boolean", int: "an integer", float: "a number", dict: "an object",
            type(None): "null"}.get(type(value), type(value).__name__)


def _values(tensor: RequestInput, expected: TensorMetadata | None) -> list[Any]:
    name = tensor.name
    if tensor.datatype not in DATATYPES:
        raise BadRequest(f"input {name!r}: unknown datatype {tensor.datatype!r}")
    if expected is not None and tensor.datatype != expected.datatype:
        raise BadRequest(f"input {name!r}: datatype {tensor.datatype} does not match the model's "
                         f"{expected.datatype}")
    if any(d < 0 for d in tensor.shape):
        raise BadRequest(f"input {name!r}: shape {tensor.shape} has a negative dimension: give the sizes sent")
    rank = len(expected.shape) if expected is not None else 1
    if len(tensor.shape) != rank:
        raise BadRequest(f"input {name!r}: shape {tensor.shape} does not match the model's "
                         f"{expected.shape if expected is not None else [-1]}")
    if tensor.data is None:
        raise BadRequest(f"input {name!r}: no data")
    values = _flat(tensor.data)
    if len(values) != tensor.shape[0]:
        raise BadRequest(f"input {name!r}: {len(values)} elements for shape {tensor.shape}")
    for j, value in enumerate(values):
        if not _fits(tensor.datatype, value):
            raise BadRequest(f"input {name!r}: element {j} is {_type_name(value)}, not {tensor.datatype}")
    return values


def rows(model: LoadedModel, request: InferRequest, max_instances: int) -> list[Any]:
    """The instances the request's tensors hold, as ``/predict`` takes them: texts or records."""
    expected = {t.name: t for t in input_tensors(model)}
    columns: dict[str, list[Any]] = {}
    for tensor in request.inputs:
        if tensor.name in columns:
            raise BadRequest(f"input {tensor.name!r} is sent twice")
        if expected and tensor.name not in expected:
            raise BadRequest(f"unknown input {tensor.name!r}: the model's inputs are {sorted(expected)}")
        columns[tensor.name] = _values(tensor, expected.get(tensor.name))
    missing = [t.name for t in expected.values() if t.name not in columns and not t.parameters]
    if missing:
        raise BadRequest(f"missing inputs {missing}: the model's inputs are {sorted(expected)}")
    if not columns:
        raise BadRequest("no inputs")
    sizes = {len(v) for v in columns.values()}
    if len(sizes) > 1:
        raise BadRequest(f"inputs of different sizes {sorted(sizes)}: each holds one element per instance")
    count = sizes.pop()
    if count == 0:
        raise BadRequest("no instances: every input is empty")
    if count > max_instances:
        raise BadRequest(f"at most {max_instances} instances per request, got {count}")
    if isinstance(model.inputs, TextInputs) or (isinstance(model.inputs, AnyInputs) and len(columns) == 1
                                                and request.inputs[0].datatype == "BYTES"):
        return next(iter(columns.values()))
    names = list(columns)
    return [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def _wanted(model: LoadedModel, request: InferRequest) -> tuple[bool, bool]:
    """Whether to answer the predictions and the probabilities."""
    available = [t.name for t in output_tensors(model)]
    asked = [o.name for o in request.outputs or []]
    for name in asked:
        if name not in available:
            raise BadRequest(f"unknown output {name!r}: the model's outputs are {available}")
    flag = (request.parameters or {}).get(PROBABILITIES, False)
    if type(flag) is not bool:
        raise BadRequest("parameters.probabilities: expected a boolean")
    if flag and model.classes is None:
        raise BadRequest("probabilities are only available for classifiers")
    if asked:
        return PREDICTIONS in asked, PROBABILITIES in asked or flag
    return True, flag


async def infer(service: PredictorService, model: LoadedModel, request: InferRequest,
                batcher: MicroBatcher | None = None, mirror: bool = False) -> bytes:
    """The answer to one inference request, scored by ``batcher`` (the service's micro-batcher by default);
    ``mirror``: a request production answers is also mirrored to the rollout's shadow version."""
    instances = rows(model, request, service.settings.max_instances)
    predictions, probabilities = _wanted(model, request)
    try:
        instances = model.inputs.validate(instances)
    except InputError as exc:
        raise BadRequest(str(exc)) from None
    batcher = batcher or service.batcher
    assert batcher is not None
    try:
        used, values, probs = await batcher.submit(instances, probabilities, model)
    except (InputError, ModelError) as exc:
        raise BadRequest(str(exc)) from None
    request_id = uuid.uuid4().hex
    service.store.record(request_id, used.version, values)
    if mirror:
        service.mirror(instances, request_id, used, values)
    outputs: list[dict[str, Any]] = []
    if predictions:
        outputs.append({"name": PREDICTIONS, "datatype": prediction_datatype(used), "shape": [len(values)],
                        "data": values})
    if probabilities and probs is not None and used.classes is not None:
        classes = [str(c) for c in used.classes]
        outputs.append({"name": PROBABILITIES, "datatype": "FP64", "shape": [len(probs), len(classes)],
                        "parameters": {"classes": classes}, "data": [row[c] for row in probs for c in classes]})
    answer: dict[str, Any] = {"model_name": used.name, "model_version": used.version}
    if request.id is not None:
        answer["id"] = request.id
    answer["parameters"] = {"request_id": request_id}
    answer["outputs"] = outputs
    return orjson.dumps(answer)


async def infer_body(catalog: ModelCatalog, name: str, version: str | None, body: bytes, header_length: str | None,
                     scope: MutableMapping[str, Any]) -> bytes:
    """One ``/v2/models/{name}[/versions/{version}]/infer`` body answered (the fast path and the FastAPI route
    both call this): the served version, or the rollout's pick (production or the canary) without a version;
    ``scope[SERVED]`` says which version answered."""
    model = served(catalog, name, version)
    service, batcher = catalog.get(name), None
    if version is None and service.rollout is not None:  # the rollout split picks production or the canary
        picked, batcher = service.pick(scope)
        if picked is None:
            raise not_serving(name)
        model = picked
    scope[SERVED] = model.version
    service.arrivals.queued(scope)  # on its way to the micro-batcher: it need not wait for this request
    return await infer(service, model, parse(body, header_length), batcher, mirror=version is None)


def refusal(exc: ServiceError) -> Response:
    return error_response(exc.status_code, exc.detail, exc.headers)
