"""The model spec: files merged with request overrides, defaults by task, strict errors."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from mlops_common.settings import REPO_ROOT
from mlops_common.spec import MetricSpec, SpecNotFound, resolve_spec

MODELS = REPO_ROOT / "models"


def test_shipped_sms_spam_spec_resolves_with_its_candidates():
    spec = resolve_spec(MODELS, "sms-spam")
    assert spec.task == "text-classification"
    assert (REPO_ROOT / spec.data.uri).is_file()
    featurizers = {c.featurizer.type for c in spec.candidates}
    assert {"bow", "tfidf", "word2vec"} <= featurizers
    assert spec.metric.name == "f1_macro" and spec.metric.higher_is_better


def test_override_is_deep_merged_over_the_file():
    spec = resolve_spec(MODELS, "sms-spam", {"metric": {"threshold": 0.5}, "data": {"uri": "/tmp/x.csv"}})
    assert spec.metric.threshold == 0.5
    assert spec.metric.name == "f1_macro"
    assert spec.data.uri == "/tmp/x.csv" and spec.data.text_column == "text"


def test_minimal_text_spec_gets_the_default_candidates(tmp_path: Path):
    spec = resolve_spec(tmp_path, "new", {
        "task": "text-classification",
        "data": {"uri": "x.csv", "text_column": "t", "label_column": "l"},
        "metric": {"name": "f1_macro", "higher_is_better": True, "threshold": 0.7},
    })
    labels = [c.label for c in spec.candidates]
    assert labels == ["bow-knn", "tfidf-knn", "word2vec-knn", "tfidf-logreg"]


def test_tabular_defaults_to_mae_lower_is_better(tmp_path: Path):
    spec = resolve_spec(tmp_path, "fares", {
        "task": "tabular-regression",
        "data": {"uri": "x.csv", "feature_columns": ["a"], "target_column": "y"},
    })
    assert spec.metric.name == "mae" and not spec.metric.higher_is_better
    assert [c.label for c in spec.candidates] == ["ridge", "random_forest", "gradient_boosting"]


def test_unknown_model_without_spec_is_refused(tmp_path: Path):
    with pytest.raises(SpecNotFound, match="no spec for model 'ghost'"):
        resolve_spec(tmp_path, "ghost")


def test_typo_in_spec_names_the_field(tmp_path: Path):
    with pytest.raises(ValidationError, match="threshhold"):
        resolve_spec(MODELS, "sms-spam", {"metric": {"threshhold": 0.9}})


def test_incomplete_spec_without_file_is_refused(tmp_path: Path):
    with pytest.raises(ValidationError, match="data"):
        resolve_spec(tmp_path, "new", {"task": "text-classification"})


@pytest.mark.parametrize("name", ["../etc", "a/b", ".hidden", ""])
def test_model_names_cannot_escape_the_models_folder(name: str):
    with pytest.raises(ValueError):
        resolve_spec(MODELS, name, {"task": "text-classification"})


@pytest.mark.parametrize(
    ("higher", "a", "b", "margin", "better"),
    [(True, 0.9, 0.8, 0.0, True), (True, 0.8, 0.9, 0.0, False), (True, 0.85, 0.84, 0.02, False),
     (False, 2.0, 3.0, 0.0, True), (False, 3.0, 2.0, 0.0, False)],
)
def test_metric_direction_and_margin(higher, a, b, margin, better):
    assert MetricSpec(name="m", higher_is_better=higher, margin=margin).better(a, b) is better


def test_threshold_respects_direction():
    assert MetricSpec(name="mae", higher_is_better=False, threshold=3.0).meets(2.5)
    assert not MetricSpec(name="mae", higher_is_better=False, threshold=3.0).meets(3.5)
    assert MetricSpec(name="mae", higher_is_better=False).meets(1e9)


@pytest.mark.parametrize("path", sorted(MODELS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_spec_resolves_and_its_data_is_in_the_repo(path: Path):
    spec = resolve_spec(MODELS, path.stem)
    assert (REPO_ROOT / spec.data.uri).is_file(), f"{path.name}: {spec.data.uri} is not shipped"
