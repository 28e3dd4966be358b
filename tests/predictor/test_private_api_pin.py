"""The one private API of another library the predictor uses: ``mlflow.sklearn._SklearnModelWrapper``, the
pyfunc wrapper MLflow puts around a scikit-learn model. The predictor deserialises the model itself (skops with
its own allowlist) and then wraps it the way ``mlflow.pyfunc.load_model`` would. MLflow is pinned to one
version; this test fails loudly when an upgrade changes what the predictor relies on."""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pandas as pd
from mlflow.models import Model
from mlflow.pyfunc import PyFuncModel
from sklearn.linear_model import LogisticRegression

PINNED_MLFLOW = "3.17.2"


def test_mlflow_is_the_pinned_version() -> None:
    assert importlib.metadata.version("mlflow") == PINNED_MLFLOW, (
        "MLflow changed: check predictor/loading.py's use of mlflow.sklearn._SklearnModelWrapper against the new "
        "version, then update the pin here and in the predictor's pyproject.toml")


def test_the_sklearn_wrapper_predicts_like_the_model() -> None:
    from mlflow.sklearn import _SklearnModelWrapper

    X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [1.0, 0.0, 1.0, 0.0]})
    model = LogisticRegression().fit(X, [0, 0, 1, 1])
    meta = Model()
    meta.add_flavor("sklearn", pickled_model="model.skops", serialization_format="skops")
    pyfunc = PyFuncModel(model_meta=meta, model_impl=_SklearnModelWrapper(model), predict_fn="predict")
    assert np.array_equal(np.asarray(pyfunc.predict(X)), model.predict(X))
