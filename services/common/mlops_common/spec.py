"""The model spec: one YAML file per model (``models/<name>.yaml``), overridable per retrain request.

Specs are strict (``extra="forbid"``): a typo in a spec is an error that names the field, never a silent
default. :func:`resolve_spec` deep-merges a request's partial spec over the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlops_common.names import TEXT_CLASSIFICATION, Task


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSpec(Strict):
    uri: str = Field(description="Dataset id, local path, http(s) URL or s3:// URI of a CSV or Parquet file")
    text_column: str | None = None
    label_column: str | None = None
    feature_columns: list[str] | None = None
    target_column: str | None = None
    # Derived features for tabular models, e.g. {"haversine_km": [...], "datetime": "pickup_datetime"}.
    derived: dict[str, Any] = Field(default_factory=dict)


class MetricSpec(Strict):
    name: str = "f1_macro"
    higher_is_better: bool = True
    # The production bar; None means any score meets it.
    threshold: float | None = None
    # The challenger must beat production by more than this to be promoted.
    margin: float = 0.0

    def better(self, a: float, b: float) -> bool:
        """True when score ``a`` beats ``b`` by more than the margin."""
        return a - b > self.margin if self.higher_is_better else b - a > self.margin

    def meets(self, value: float) -> bool:
        if self.threshold is None:
            return True
        return value >= self.threshold if self.higher_is_better else value <= self.threshold


class Component(Strict):
    type: str
    params: dict[str, Any] = Field(default_factory=dict)


class Candidate(Strict):
    name: str | None = None
    featurizer: Component | None = None
    estimator: Component
    # Optional small grid: {param_name: [values]} over "featurizer__x" / "estimator__y".
    grid: dict[str, list[Any]] = Field(default_factory=dict)

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        return f"{self.featurizer.type}-{self.estimator.type}" if self.featurizer else self.estimator.type


class SplitSpec(Strict):
    test_size: float = Field(0.2, gt=0, lt=1)
    validation_size: float = Field(0.2, gt=0, lt=1)
    seed: int = 42


class DriftSpec(Strict):
    # PSI rule of thumb: < 0.1 stable, 0.1-0.25 moderate, > 0.25 major.
    psi_threshold: float = 0.25
    # Jensen-Shannon distance threshold for text token / length / class distributions.
    js_threshold: float = 0.1
    window_size: int = Field(1000, ge=10)


class QualitySpec(Strict):
    window_size: int = Field(500, ge=1)
    feedback_ttl_seconds: int = Field(7 * 24 * 3600, ge=60)


class RetrainSpec(Strict):
    """What a retrain that the stack starts by itself trains on (an alert's; trainer-beat's when ``scheduled``):
    ``reference`` is ``data.uri``; ``production`` the labelled rows the predictor served in the last
    ``window_days`` (at most ``max_rows``, newest first: ``production:<model>?days=..&rows=..``); ``both`` the
    reference data plus those rows. A retrain asked for through the API trains on the ``data.uri`` it gives."""

    data: Literal["reference", "production", "both"] = "reference"
    window_days: float = Field(7.0, gt=0)
    max_rows: int = Field(50_000, ge=1)
    # Scheduled retrains use ``data`` too (otherwise they train on ``data.uri``).
    scheduled: bool = False


TEXT_DEFAULT_CANDIDATES = [
    Candidate(featurizer=Component(type="bow"), estimator=Component(type="knn", params={"n_neighbors": 5})),
    Candidate(featurizer=Component(type="tfidf"), estimator=Component(type="knn", params={"n_neighbors": 5})),
    Candidate(featurizer=Component(type="word2vec"), estimator=Component(type="knn", params={"n_neighbors": 5})),
    Candidate(featurizer=Component(type="tfidf"), estimator=Component(type="logreg", params={"max_iter": 1000})),
]
TABULAR_DEFAULT_CANDIDATES = [
    Candidate(estimator=Component(type="ridge")),
    Candidate(estimator=Component(type="random_forest", params={"n_estimators": 100})),
    Candidate(estimator=Component(type="gradient_boosting")),
]


class ModelSpec(Strict):
    name: str
    task: Task
    description: str = ""
    data: DataSpec
    metric: MetricSpec | None = None
    split: SplitSpec = Field(default_factory=SplitSpec)
    candidates: list[Candidate] | None = None
    drift: DriftSpec = Field(default_factory=DriftSpec)
    quality: QualitySpec = Field(default_factory=QualitySpec)
    # Cron expression honoured by trainer-beat, e.g. "0 3 * * 1".
    schedule: str | None = None
    retrain: RetrainSpec = Field(default_factory=RetrainSpec)

    @model_validator(mode="after")
    def _defaults_by_task(self) -> ModelSpec:
        text = self.task == TEXT_CLASSIFICATION
        if text and not (self.data.text_column and self.data.label_column):
            raise ValueError("text-classification needs data.text_column and data.label_column")
        if not text and not (self.data.feature_columns and self.data.target_column):
            raise ValueError("tabular-regression needs data.feature_columns and data.target_column")
        if self.metric is None:
            self.metric = (
                MetricSpec() if text else MetricSpec(name="mae", higher_is_better=False)
            )
        if self.candidates is None:
            self.candidates = list(TEXT_DEFAULT_CANDIDATES if text else TABULAR_DEFAULT_CANDIDATES)
        if not self.candidates:
            raise ValueError("candidates must not be empty")
        return self


class SpecNotFound(LookupError):
    """No spec file for the model and no complete spec in the request."""


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def spec_path(models_dir: Path, name: str) -> Path:
    return models_dir / f"{name}.yaml"


def load_spec_file(models_dir: Path, name: str) -> dict[str, Any] | None:
    path = spec_path(models_dir, name)
    if not path.is_file():
        return None
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path} must hold a mapping")
    return raw


def resolve_spec(models_dir: Path, name: str, override: dict[str, Any] | None = None) -> ModelSpec:
    """The spec file for ``name`` (if any) with ``override`` merged over it, validated.

    Raises :class:`SpecNotFound` when there is neither a file nor an override, and pydantic's
    ``ValidationError`` when the merged spec is invalid (for example incomplete without a file).
    """
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"invalid model name {name!r}")
    base = load_spec_file(models_dir, name)
    if base is None and not override:
        raise SpecNotFound(f"no spec for model {name!r}: add models/{name}.yaml or send a full 'spec'")
    merged = deep_merge(base or {}, override or {})
    merged["name"] = name
    return ModelSpec.model_validate(merged)
