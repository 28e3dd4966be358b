"""Featurizer × estimator pairs from the spec, built into the sklearn Pipelines that get logged.

Text:    Pipeline([("text", TextColumn(col)), ("features", bow|tfidf|word2vec), ("model", estimator)])
Tabular: Pipeline([("features", TabularFeatures(...)), ("impute", SimpleImputer), ("model", estimator)])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier, RandomForestRegressor
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge, SGDClassifier
from sklearn.naive_bayes import ComplementNB, MultinomialNB
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from mlops_common.featurizers import TextColumn, Word2VecVectorizer
from mlops_common.names import TEXT_CLASSIFICATION
from mlops_common.spec import Candidate, Component, ModelSpec
from mlops_common.tabular import TabularFeatures

TUPLE_PARAMS = {"ngram_range"}


def _params(params: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if k in TUPLE_PARAMS and isinstance(v, list) else v for k, v in params.items()}


FEATURIZERS: dict[str, Callable[..., Any]] = {
    "bow": CountVectorizer,
    "tfidf": TfidfVectorizer,
    "word2vec": Word2VecVectorizer,
}
TEXT_ESTIMATORS: dict[str, Callable[..., Any]] = {
    "knn": KNeighborsClassifier,
    "logreg": LogisticRegression,
    "linear_svc": LinearSVC,
    "naive_bayes": MultinomialNB,
    "complement_nb": ComplementNB,
    "sgd": SGDClassifier,
    "random_forest": RandomForestClassifier,
}
TABULAR_ESTIMATORS: dict[str, Callable[..., Any]] = {
    "ridge": Ridge,
    "random_forest": RandomForestRegressor,
    "gradient_boosting": GradientBoostingRegressor,
    "knn": KNeighborsRegressor,
}
# Estimators that need non-negative features (so not Word2vec's dense vectors).
NON_NEGATIVE = {"naive_bayes", "complement_nb"}
# Estimators that want scaled inputs on tabular data.
SCALED = {"ridge", "knn"}
SEEDED = {"random_forest", "gradient_boosting", "sgd", "logreg", "linear_svc"}


class SpecError(ValueError):
    """A spec that names an unknown component or bad params; the message names the field."""


def _make(registry: dict[str, Callable[..., Any]], comp: Component, field: str, seed: int) -> Any:
    factory = registry.get(comp.type)
    if factory is None:
        raise SpecError(f"{field}.type: unknown {comp.type!r} (one of: {', '.join(sorted(registry))})")
    params = _params(comp.params)
    if comp.type in SEEDED and "random_state" not in params:
        params["random_state"] = seed
    try:
        return factory(**params)
    except TypeError as exc:
        raise SpecError(f"{field}.params: {exc}") from exc


def build(spec: ModelSpec, candidate: Candidate, index: int) -> Pipeline:
    seed = spec.split.seed
    field = f"candidates[{index}]"
    if spec.task == TEXT_CLASSIFICATION:
        if candidate.featurizer is None:
            raise SpecError(f"{field}.featurizer: text candidates need a featurizer (bow, tfidf or word2vec)")
        if candidate.featurizer.type == "word2vec" and candidate.estimator.type in NON_NEGATIVE:
            raise SpecError(f"{field}: {candidate.estimator.type} needs non-negative features; use bow or tfidf")
        features = _make(FEATURIZERS, candidate.featurizer, f"{field}.featurizer", seed)
        model = _make(TEXT_ESTIMATORS, candidate.estimator, f"{field}.estimator", seed)
        return Pipeline([("text", TextColumn(spec.data.text_column or "text")), ("features", features),
                         ("model", model)])
    if candidate.featurizer is not None:
        raise SpecError(f"{field}.featurizer: tabular candidates take no featurizer (derived features come "
                        "from data.derived)")
    model = _make(TABULAR_ESTIMATORS, candidate.estimator, f"{field}.estimator", seed)
    steps: list[tuple[str, Any]] = [("features", tabular_features(spec)), ("impute", SimpleImputer(strategy="median"))]
    if candidate.estimator.type in SCALED:
        steps.append(("scale", StandardScaler()))
    steps.append(("model", model))
    return Pipeline(steps)


DERIVED_KEYS = {"haversine_km", "datetime", "drop_zero", "target_min", "target_max"}


def tabular_features(spec: ModelSpec) -> TabularFeatures:
    derived = spec.data.derived or {}
    unknown = set(derived) - DERIVED_KEYS
    if unknown:
        raise SpecError(f"data.derived: unknown key(s) {sorted(unknown)} (one of: {', '.join(sorted(DERIVED_KEYS))})")
    hav = derived.get("haversine_km")
    if hav is not None and (not isinstance(hav, list) or len(hav) != 4):
        raise SpecError("data.derived.haversine_km: give four columns [lat1, lon1, lat2, lon2]")
    dt = derived.get("datetime")
    if dt is not None and not isinstance(dt, str):
        raise SpecError("data.derived.datetime: give one column name")
    return TabularFeatures(feature_columns=list(spec.data.feature_columns or []), haversine=hav, datetime_column=dt)


def check_spec(spec: ModelSpec) -> None:
    """Build every candidate once (unfitted) so a bad spec is refused before a job is queued."""
    from trainer.evaluation import METRICS

    known = METRICS[spec.task]
    assert spec.metric is not None
    if spec.metric.name not in known:
        raise SpecError(f"metric.name: unknown {spec.metric.name!r} for {spec.task} (one of: {', '.join(known)})")
    if known[spec.metric.name].higher_is_better != spec.metric.higher_is_better:
        raise SpecError(f"metric.higher_is_better: {spec.metric.name} is "
                        f"{'higher' if known[spec.metric.name].higher_is_better else 'lower'}-is-better")
    if spec.split.test_size + spec.split.validation_size >= 0.9:
        raise SpecError("split: test_size + validation_size must leave at least 10% for training")
    if spec.schedule:
        from croniter import croniter

        if not croniter.is_valid(spec.schedule):
            raise SpecError(f"schedule: {spec.schedule!r} is not a valid cron expression")
    for i, cand in enumerate(spec.candidates or []):
        build(spec, cand, i)
        for key in cand.grid:
            step = key.split("__", 1)[0]
            if step not in ("featurizer", "estimator") or "__" not in key:
                raise SpecError(f"candidates[{i}].grid: {key!r} must look like featurizer__param or estimator__param")
