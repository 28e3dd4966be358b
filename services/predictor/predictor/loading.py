"""Loading one registered model version: the sklearn pipeline, its signature, drift reference and spec."""

from __future__ import annotations

import json
import logging
import pickle
import shutil
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import Model
from mlflow.pyfunc import PyFuncModel
from pydantic import ValidationError

from mlops_common import mlflow_utils
from mlops_common.drift import DriftMonitor
from mlops_common.names import REFERENCE_STATS_ARTIFACT, SPEC_ARTIFACT, TABULAR_REGRESSION, TEXT_CLASSIFICATION
from mlops_common.observability import log_context
from mlops_common.spec import ModelSpec, QualitySpec
from predictor.inputs import Inputs, TextInputs, check_list, inputs_for_schema

log = logging.getLogger(__name__)

TABULAR_CLASSIFICATION = "tabular-classification"

# The types skops is told to trust, beyond its own defaults (numpy, scikit-learn estimators...), when it loads
# a model: what this stack's trainer builds (our featurizers, sparse matrices kept by k-NN, k-NN search trees,
# decision trees of the forest and boosting candidates). Held here, in the project's code, plus the operator's
# MODEL_TRUSTED_TYPES; the `skops_trusted_types` a model carries in its own MLmodel file is ignored.
# Note: skops warns that a crafted sklearn.tree._tree.Tree can crash predict(); it is trusted because the
# trainer's random_forest and gradient_boosting candidates need it.
TRUSTED_TYPES: tuple[str, ...] = (
    "mlops_common.featurizers.TextColumn",
    "mlops_common.featurizers.Word2VecVectorizer",
    "mlops_common.tabular.TabularFeatures",
    "numpy.dtype",
    "scipy.sparse._csr.csr_matrix",
    "scipy.sparse._csr.csr_array",
    "scipy.sparse._csc.csc_matrix",
    "scipy.sparse._csc.csc_array",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.metrics._dist_metrics.ManhattanDistance64",
    "sklearn.metrics._dist_metrics.MinkowskiDistance64",
    "sklearn.metrics._dist_metrics.ChebyshevDistance64",
    "sklearn.tree._tree.Tree",
)
PICKLE_FORMATS = ("pickle", "cloudpickle")


class ModelLoadError(RuntimeError):
    """The version could not be downloaded, loaded or warmed up."""


DEFAULT_QUALITY = QualitySpec()


@dataclass(frozen=True)
class ServingSpec:
    """What serving takes from a version's ``spec.json``: its task, text column, production bar and
    feedback settings (the quality defaults of :class:`~mlops_common.spec.QualitySpec` when absent)."""

    task: str | None = None
    text_column: str | None = None
    threshold: float | None = None
    feedback_ttl_seconds: int = DEFAULT_QUALITY.feedback_ttl_seconds
    quality_window_size: int = DEFAULT_QUALITY.window_size

    @classmethod
    def parse(cls, raw: Any, label: str) -> ServingSpec | None:
        """The spec of ``raw`` (the artifact's JSON) as :class:`~mlops_common.spec.ModelSpec` validates it. An
        older or partial spec that does not validate is read field by field instead, with a warning."""
        if raw is None:
            return None
        try:
            spec = ModelSpec.model_validate(raw)
        except ValidationError as exc:
            log.warning("%s: its %s does not validate as a model spec (%d errors, first: %s); reading the "
                        "fields serving needs one by one", label, SPEC_ARTIFACT, exc.error_count(),
                        exc.errors()[0].get("msg"))
            return cls._lenient(raw)
        return cls(task=spec.task, text_column=spec.data.text_column,
                   threshold=spec.metric.threshold if spec.metric else None,
                   feedback_ttl_seconds=spec.quality.feedback_ttl_seconds,
                   quality_window_size=spec.quality.window_size)

    @classmethod
    def _lenient(cls, raw: Any) -> ServingSpec:
        if not isinstance(raw, dict):
            return cls()
        def section(key: str) -> dict[str, Any]:
            value = raw.get(key)
            return value if isinstance(value, dict) else {}

        threshold = section("metric").get("threshold")
        quality = section("quality")
        return cls(task=str(raw["task"]) if raw.get("task") else None,
                   text_column=section("data").get("text_column") or None,
                   threshold=float(threshold) if isinstance(threshold, int | float) else None,
                   feedback_ttl_seconds=int(quality.get("feedback_ttl_seconds")
                                            or DEFAULT_QUALITY.feedback_ttl_seconds),
                   quality_window_size=int(quality.get("window_size") or DEFAULT_QUALITY.window_size))


@dataclass(frozen=True)
class ModelTrust:
    """What a loader may deserialise; decided by the project and its settings, never by the model."""

    extra_types: tuple[str, ...] = ()
    allow_pickle: bool = False

    @property
    def types(self) -> list[str]:
        return sorted(set(TRUSTED_TYPES) | set(self.extra_types))


def load_sklearn_pyfunc(local: Path, label: str, trust: ModelTrust) -> PyFuncModel:
    """The pyfunc model of the sklearn model downloaded in ``local``, deserialised once, by us: a skops file
    with the project's allowlist, a pickle only when allowed. Unlike ``mlflow.pyfunc.load_model`` this reads
    from MLmodel only where the model file is and its format: not its trusted types, loader module or code."""
    import skops.io
    from mlflow.sklearn import _SklearnModelWrapper
    from skops.io.exceptions import UntrustedTypesFoundException

    meta = Model.load(str(local / "MLmodel"))
    conf = meta.flavors.get("sklearn")
    if not conf:
        raise ModelLoadError(f"{label} refused: not a scikit-learn model (flavors: {sorted(meta.flavors)})")
    fmt = conf.get("serialization_format", "pickle")
    root = local.resolve()
    path = (root / str(conf.get("pickled_model") or "")).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise ModelLoadError(f"{label} refused: its model file {conf.get('pickled_model')!r} is not in the model")
    if fmt == "skops":
        trusted = trust.types
        try:
            raw = skops.io.load(path, trusted=trusted)
        except UntrustedTypesFoundException:
            untrusted = sorted(set(skops.io.get_untrusted_types(file=path)) - set(trusted))
            raise ModelLoadError(
                f"{label} refused: untrusted types {untrusted} in its skops file (not in the predictor's "
                "allowlist; the model's own skops_trusted_types are ignored; add reviewed types to "
                "MODEL_TRUSTED_TYPES)") from None
    elif fmt in PICKLE_FORMATS:
        if not trust.allow_pickle:
            raise ModelLoadError(f"{label} refused: saved in the {fmt} format, which can run any code when "
                                 "loaded; only skops models are loaded unless MODEL_ALLOW_PICKLE=true")
        import cloudpickle  # reads pickle and cloudpickle files alike

        with path.open("rb") as fh:
            raw = cloudpickle.load(fh)
    else:
        raise ModelLoadError(f"{label} refused: unknown serialization format {fmt!r}")
    return PyFuncModel(model_meta=meta, model_impl=_SklearnModelWrapper(raw), predict_fn="predict",
                       model_id=meta.model_id)


@dataclass
class LoadedModel:
    name: str
    version: str
    run_id: str | None
    pipeline: Any
    pyfunc: Any
    inputs: Inputs
    task: str
    classes: list[Any] | None
    reference: dict[str, Any] | None
    spec: ServingSpec | None
    input_schema: Any
    load_seconds: float = 0.0
    # The pickled size of the model: a cheap estimate of the memory it holds.
    size_bytes: int = 0
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    monitor: DriftMonitor | None = None

    @property
    def is_classifier(self) -> bool:
        return self.classes is not None

    def predict(self, rows: list[Any], probabilities: bool = False) -> tuple[list[Any], list[dict[str, float]] | None]:
        frame = self.inputs.frame(rows)
        predictions = self.pipeline.predict(frame)
        values = predictions.tolist() if hasattr(predictions, "tolist") else list(predictions)
        probs = None
        if probabilities and self.classes is not None:
            matrix = np.asarray(self.pipeline.predict_proba(frame), dtype=float)
            names = [str(c) for c in self.classes]
            probs = [dict(zip(names, row, strict=True)) for row in matrix.round(6).tolist()]
        return values, probs

    def describe(self) -> dict[str, Any]:
        return {
            "model_name": self.name,
            "model_version": self.version,
            "run_id": self.run_id,
            "task": self.task,
            "classes": [str(c) for c in self.classes] if self.classes is not None else None,
            "inputs": [{"name": c.name, "type": c.type, "required": c.required} for c in self.inputs.columns],
            "input_kind": self.inputs.kind,
            "loaded_at": self.loaded_at.isoformat(),
            "load_seconds": round(self.load_seconds, 3),
            "drift_reference": self.reference is not None,
        }


def _json_artifact(client: Any, run_id: str | None, path: str, dst: Path) -> dict[str, Any] | None:
    if not run_id:
        return None
    try:
        dst.mkdir(parents=True, exist_ok=True)
        local = client.download_artifacts(run_id, path, str(dst))
        return json.loads(Path(local).read_text(encoding="utf-8"))
    except Exception as exc:  # noqa: BLE001 - absent artifact or unreadable JSON: serve without it
        log.info("run %s has no usable %s (%s)", run_id, path, type(exc).__name__)
        return None


def _example_instances(example: Any, inputs: Inputs) -> list[Any] | None:
    if example is None:
        return None
    if isinstance(example, pd.DataFrame):
        if isinstance(inputs, TextInputs):
            column = inputs.column if inputs.column in example.columns else example.columns[0]
            return [str(v) for v in example[column].tolist()][:8]
        return json.loads(example.head(8).to_json(orient="records", date_format="iso"))
    if isinstance(example, dict):
        return [example]
    if isinstance(example, list | tuple | np.ndarray):
        return list(example)[:8]
    return None


def _synthetic_instances(inputs: Inputs) -> list[Any]:
    if isinstance(inputs, TextInputs):
        return ["warm up the model"]
    defaults = {"string": "", "boolean": False, "datetime": "2024-01-01T00:00:00"}
    return [{c.name: defaults.get(c.type, 0.0) for c in inputs.columns}]


def _task(reference: dict[str, Any] | None, spec: ServingSpec | None, inputs: Inputs, classes: Any) -> str:
    if reference and reference.get("task"):
        return str(reference["task"])
    if spec is not None and spec.task:
        return spec.task
    if isinstance(inputs, TextInputs) or classes is not None:
        return TEXT_CLASSIFICATION if isinstance(inputs, TextInputs) else TABULAR_CLASSIFICATION
    return TABULAR_REGRESSION


def warm_up(model: LoadedModel, instances: list[Any]) -> None:
    """Score a few instances through both paths (/predict and /invocations); raises on any failure."""
    rows: list[Any] = model.inputs.validate(check_list(instances, 10_000))
    values, _ = model.predict(rows, probabilities=model.is_classifier)
    if len(values) != len(rows):
        raise ModelLoadError(f"warm-up returned {len(values)} predictions for {len(rows)} instances")
    model.pyfunc.predict(pd.DataFrame({model.inputs.column: rows}) if isinstance(model.inputs, TextInputs)
                         else model.inputs.frame(rows))


@dataclass
class FetchedVersion:
    """What a loader process hands over: the pyfunc model pickled (milliseconds to unpickle, against most of a
    second to deserialise a skops artifact), and the small JSON things that go with it."""

    name: str
    version: str
    run_id: str | None
    pyfunc_pickle: bytes
    example: list[Any] | None
    reference: dict[str, Any] | None
    spec: ServingSpec | None
    fetch_seconds: float


def _build(name: str, version: str, run_id: str | None, pyfunc: Any, reference: dict[str, Any] | None,
           spec: ServingSpec | None) -> LoadedModel:
    pipeline = pyfunc.get_raw_model()
    schema = pyfunc.metadata.get_input_schema()
    inputs = inputs_for_schema(schema, spec.text_column if spec else None)
    classes = getattr(pipeline, "classes_", None) if hasattr(pipeline, "predict_proba") else None
    model = LoadedModel(
        name=name, version=str(version), run_id=run_id, pipeline=pipeline, pyfunc=pyfunc, inputs=inputs,
        task=_task(reference, spec, inputs, classes),
        classes=list(classes.tolist() if hasattr(classes, "tolist") else classes) if classes is not None else None,
        reference=reference, spec=spec, input_schema=schema,
    )
    if reference:
        try:
            model.monitor = DriftMonitor(reference)
        except Exception as exc:  # noqa: BLE001 - drift is advisory: serve without a monitor
            log.warning("drift reference of %s v%s unusable: %s", name, version, exc)
    return model


def _warm(model: LoadedModel, example: list[Any] | None) -> None:
    try:
        warm_up(model, example or _synthetic_instances(model.inputs))
    except Exception as exc:
        raise ModelLoadError(f"{model.name} version {model.version} failed its warm-up: "
                             f"{type(exc).__name__}: {exc}") from exc


def fetch_version(tracking_uri: str, name: str, version: str, cache_dir: Path | None = None,
                  trust: ModelTrust | None = None) -> FetchedVersion:
    """Download, load (with ``trust``) and warm up ``models:/<name>/<version>``; blocking, meant for a loader
    process."""
    with log_context(model=name, version=version):
        return _fetch_version(tracking_uri, name, str(version), cache_dir, trust or ModelTrust())


def _fetch_version(tracking_uri: str, name: str, version: str, cache_dir: Path | None,
                   trust: ModelTrust) -> FetchedVersion:
    started = time.perf_counter()
    client = mlflow_utils.client(tracking_uri)
    workdir = Path(tempfile.mkdtemp(prefix=f"predictor-{version}-", dir=cache_dir))
    try:
        try:
            model_version = client.get_model_version(name, version)
        except Exception as exc:
            raise ModelLoadError(f"could not read {name} version {version}: {type(exc).__name__}: {exc}") from exc
        run_id = model_version.run_id
        # The run's small JSON artifacts download while the model does.
        with ThreadPoolExecutor(max_workers=2) as pool:
            reference_future = pool.submit(_json_artifact, client, run_id, REFERENCE_STATS_ARTIFACT,
                                           workdir / "reference")
            spec_future = pool.submit(_json_artifact, client, run_id, SPEC_ARTIFACT, workdir / "spec")
            try:
                local = mlflow.artifacts.download_artifacts(
                    artifact_uri=mlflow_utils.model_uri(name, version), dst_path=str(workdir / "model"))
                pyfunc = load_sklearn_pyfunc(Path(local), f"{name} version {version}", trust)
                try:
                    raw_example = pyfunc.metadata.load_input_example(local)
                except Exception:  # noqa: BLE001 - the input example is optional
                    raw_example = None
            except ModelLoadError:
                raise
            except Exception as exc:
                raise ModelLoadError(f"could not load {name} version {version}: {type(exc).__name__}: {exc}") from exc
            reference = reference_future.result()
            spec = ServingSpec.parse(spec_future.result(), f"{name} version {version}")
        model = _build(name, version, run_id, pyfunc, reference, spec)
        example = _example_instances(raw_example, model.inputs)
        _warm(model, example)
        try:
            pickled = pickle.dumps(pyfunc, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise ModelLoadError(f"{name} version {version} cannot be handed over: {exc}") from exc
        return FetchedVersion(name=name, version=version, run_id=run_id, pyfunc_pickle=pickled,
                              example=example, reference=reference, spec=spec,
                              fetch_seconds=time.perf_counter() - started)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def assemble(fetched: FetchedVersion) -> LoadedModel:
    """The served model from a fetched version (fast: unpickling and one small warm-up prediction)."""
    started = time.perf_counter()
    try:
        pyfunc = pickle.loads(fetched.pyfunc_pickle)  # produced by our own loader from our own registry
    except Exception as exc:
        raise ModelLoadError(f"could not unpickle {fetched.name} version {fetched.version}: {exc}") from exc
    model = _build(fetched.name, fetched.version, fetched.run_id, pyfunc, fetched.reference, fetched.spec)
    _warm(model, fetched.example)
    model.load_seconds = fetched.fetch_seconds + (time.perf_counter() - started)
    model.size_bytes = len(fetched.pyfunc_pickle)
    return model


def load_version(tracking_uri: str, name: str, version: str, cache_dir: Path | None = None,
                 trust: ModelTrust | None = None) -> LoadedModel:
    """Fetch and assemble in this process (blocking: run it in a worker thread)."""
    return assemble(fetch_version(tracking_uri, name, version, cache_dir, trust))


def preload() -> bool:
    """Imports a loader process needs, done ahead of the first load."""
    import mlflow.pyfunc
    import mlflow.sklearn  # noqa: F401
    import skops.io  # noqa: F401

    return True


def label_counts(values: list[Any]) -> Counter[str]:
    return Counter(str(v) for v in values)
