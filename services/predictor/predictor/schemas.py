"""The predictor's request and answer bodies, as its OpenAPI document describes them.

``/predict`` and ``/invocations`` are answered by the fast path (:mod:`predictor.fastpath`), which parses with
orjson and never builds these models: they document the bodies it takes and gives.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

JSON_MEDIA_TYPE = "application/json"


class PredictRequest(BaseModel):
    instances: list[str | dict[str, Any]] = Field(
        description="Texts (text models: a string, or an object holding the text column) or records of raw "
                    "feature columns (tabular models), checked against the served version's signature",
        examples=[["WINNER!! Claim your free prize now", "Lunch tomorrow?"]])
    probabilities: bool = Field(False, description="Also answer each class's probability (classifiers only)")


class PredictResponse(BaseModel):
    predictions: list[Any]
    model_name: str
    model_version: str = Field(description="The version that scored this request")
    request_id: str = Field(description="Send it back with POST /feedback to join the ground truth")
    probabilities: list[dict[str, float]] | None = Field(None, description="Only when asked for")


class InvocationsRequest(BaseModel):
    """MLflow's scoring protocol (``mlflow models serve``): exactly one of the input keys."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    dataframe_split: dict[str, Any] | None = Field(
        None, description='{"columns": [...], "data": [[...], ...], "index": [...]}',
        examples=[{"columns": ["text"], "data": [["Lunch tomorrow?"]]}])
    dataframe_records: list[dict[str, Any]] | None = Field(None, description="One object per row")
    instances: list[Any] | None = None
    inputs: list[Any] | dict[str, Any] | None = None
    params: dict[str, Any] | None = Field(None, description="Inference parameters of the model's signature")


class InvocationsResponse(BaseModel):
    predictions: Any


class MlflowError(BaseModel):
    """A refusal of ``/invocations``, in MLflow's shape (with ``detail``, the shape of every other refusal)."""

    error_code: str
    message: str
    detail: str


class ErrorBody(BaseModel):
    """A refusal: the reason, and for a refused instance the field at fault (``instances[1].distance_km``)."""

    model_config = ConfigDict(extra="allow")

    detail: Any
    field: str | None = None


class InputColumn(BaseModel):
    name: str
    type: str
    required: bool


class Swap(BaseModel):
    from_version: str | None
    to_version: str
    reason: str
    seconds: float


class DriftReport(BaseModel):
    metric: str
    threshold: float
    window_samples: int
    ready: bool
    overall: float
    features: dict[str, float]
    drifted_features: list[str]


class ModelInfo(BaseModel):
    """The served version (``null`` fields while none is) and how the follower of the registry is doing."""

    model_name: str
    model_version: str | None
    run_id: str | None = None
    task: str | None = None
    classes: list[str] | None = None
    inputs: list[InputColumn] | None = None
    input_kind: str | None = None
    loaded_at: str | None = None
    load_seconds: float | None = None
    drift_reference: bool | None = None
    serving: bool
    alias_version: str | None
    previous_version: str | None
    standby_version: str | None
    rollout: dict[str, Any] | None = Field(None, description="the rollout split followed (the model's "
                                           "mlops.rollout tag): {canary: {version, weight}, shadow: {version, share}}")
    reloads: dict[str, int]
    failed_versions: dict[str, str]
    last_swap: Swap | None
    events_connected: bool
    last_error: str | None
    drift: DriftReport | None


class ServedModel(BaseModel):
    model_name: str
    model_version: str | None = Field(description="the production version served (null until one is)")
    default: bool = Field(description="whether /predict answers with this model (MODEL_NAME)")
    loaded_versions: list[str] = Field(description="other versions held in memory, least recently used first")


class ServedModels(BaseModel):
    models: list[ServedModel]


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=128)
    label: str | int | bool | None = Field(None, description="The true class (classifiers)")
    value: float | None = Field(None, description="The true value (regressors)")
    index: int | None = Field(None, ge=0, description="Which instance of a multi-instance request")


class FeedbackResponse(BaseModel):
    request_id: str
    index: int
    model_version: str
    prediction: Any
    window: int = Field(description="Feedbacks in the live quality window")
    correct: bool | None = None
    live_accuracy: float | None = None
    absolute_error: float | None = None
    live_mae: float | None = None


def request_body(model: type[BaseModel], *, csv: bool = False) -> dict[str, Any]:
    """``openapi_extra`` documenting ``model`` as the JSON body of a route that reads its body itself."""
    content: dict[str, Any] = {JSON_MEDIA_TYPE: {"schema": model.model_json_schema()}}
    if csv:
        content["text/csv"] = {"schema": {"type": "string", "description": "CSV with a header row"}}
    return {"requestBody": {"required": True, "content": content}}
