"""MLflow's registry as registry-proxy sees it: typed reads, alias moves, tags; errors mapped to 404/422/503."""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from mlflow.exceptions import MlflowException

from mlops_common import mlflow_utils
from mlops_common.names import Tag
from registry_proxy.errors import NotFound, Unavailable, Unprocessable

T = TypeVar("T")
log = logging.getLogger(__name__)

# Tags that mark a version as having failed validation: promoting it is refused (409).
FAILED_VALUES = {"failed", "rejected", "invalid"}
VALIDATION_TAGS = (Tag.VALIDATION, Tag.VALIDATION_STATUS, Tag.DECISION)
# A job id goes into an MLflow search filter, whose string literals have no escape for a quote.
JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
LOGGED_MODEL_URI = re.compile(r"^models:/(m-[A-Za-z0-9]+)$")
RUN_URI = re.compile(r"^runs:/([A-Za-z0-9]+)/(.+)$")
# What MLflow answers for a run or logged model that does not exist: its auth app answers 403, not 404, so that
# its answers do not tell which ids exist.
ABSENT_CODES = ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "PERMISSION_DENIED", "INVALID_PARAMETER_VALUE")
# The evaluation plots the trainer logs in a version's run (mlflow.log_figure): a classifier's confusion matrix,
# else a regressor's residuals. The first one the run holds is the one shown.
PLOT_DIR = "plots"
PLOTS = ("plots/confusion_matrix.png", "plots/residuals.png")
# A plot is streamed whole through registry-proxy's memory: a run holding something far larger than a figure
# is refused rather than read.
MAX_PLOT_BYTES = 5 * 1024 * 1024


def check_job_id(job_id: str) -> None:
    if not JOB_ID.match(job_id):
        raise Unprocessable(f"job_id {job_id!r} is not a valid job id: letters, digits and . _ : - only, starting "
                            "with a letter or digit")


def configure_mlflow_http(timeout_seconds: int, max_retries: int) -> None:
    """MLflow's REST client reads these from the environment on every call: fail fast instead of retrying for
    minutes. Set once by the app's lifespan, before the first call."""
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(timeout_seconds)
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(max_retries)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")


class Registry:
    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self.client = mlflow_utils.client(tracking_uri)

    def _call(self, what: str, fn: Callable[[], T], model: str | None = None) -> T:
        try:
            return fn()
        except MlflowException as exc:
            if mlflow_utils.is_not_found(exc):
                raise NotFound(f"{what} not found") from exc
            if exc.error_code == "PERMISSION_DENIED":
                # MLflow's auth app answers 403 for a model that does not exist (nobody holds a permission on it).
                if model is not None and not self._exists(model):
                    raise NotFound(f"{what} not found") from exc
                log.error("MLflow refused registry-proxy's user (%s): %s", what, exc)
                raise Unavailable(f"MLflow refused registry-proxy's own user ({what}): it needs MANAGE on the "
                                  "model (docker/mlflow/provision_users.py grants it)") from exc
            log.warning("MLflow call failed (%s): %s", what, exc)
            raise Unavailable(f"MLflow unavailable ({what}): {_short(exc)}") from exc
        except Exception as exc:  # connection errors surface as requests/urllib3 exceptions
            log.warning("MLflow call failed (%s): %s", what, exc)
            raise Unavailable(f"MLflow unavailable ({what}): {_short(exc)}") from exc

    def _exists(self, model: str) -> bool:
        try:
            return mlflow_utils.model_exists(self.client, model)
        except Exception as exc:
            raise Unavailable(f"MLflow unavailable (model {model!r}): {_short(exc)}") from exc

    def list_models(self) -> list[RegisteredModel]:
        models: list[RegisteredModel] = []
        token = None
        while True:
            page = self._call("registered models", partial(self.client.search_registered_models, max_results=200,
                                                           page_token=token, order_by=["name ASC"]))
            models.extend(page)
            token = page.token
            if not token:
                return models

    def get_model(self, name: str) -> RegisteredModel:
        return self._call(f"model {name!r}", lambda: self.client.get_registered_model(name), name)

    def versions(self, name: str) -> list[ModelVersion]:
        escaped = name.replace("'", "\\'")
        found = self._call(f"versions of {name!r}",
                           lambda: self.client.search_model_versions(f"name = '{escaped}'", max_results=1000))
        return sorted(found, key=lambda v: int(v.version), reverse=True)

    def get_version(self, name: str, version: str) -> ModelVersion:
        if not str(version).isdigit():
            raise NotFound(f"version {version!r} of model {name!r} not found")
        return self._call(f"version {version} of model {name!r}",
                          lambda: self.client.get_model_version(name, version), name)

    def aliases(self, name: str) -> dict[str, str]:
        return {alias: str(v) for alias, v in (self.get_model(name).aliases or {}).items()}

    def run_info(self, run_id: str) -> tuple[dict[str, float], str | None]:
        """(metrics, experiment id) of a run; empty when the run is gone."""
        try:
            run = self._call(f"run {run_id}", lambda: self.client.get_run(run_id))
        except NotFound:
            return {}, None
        return dict(run.data.metrics), run.info.experiment_id

    def run_plot(self, run_id: str) -> bytes | None:
        """The PNG bytes of the run's evaluation plot (see PLOTS); None when the run is gone, hidden from
        registry-proxy's user, or holds neither plot. A plot over MAX_PLOT_BYTES is refused (422) before it is
        downloaded, so one odd run cannot fill the proxy's memory."""
        listed = self._find(f"plots of run {run_id}", lambda: self.client.list_artifacts(run_id, PLOT_DIR)) or []
        sizes = {f.path: f.file_size for f in listed if not f.is_dir}
        path = next((p for p in PLOTS if p in sizes), None)
        if path is None:
            return None

        def too_large(size: int) -> Unprocessable:
            return Unprocessable(f"{path} of run {run_id} is {size} bytes, more than the {MAX_PLOT_BYTES} this "
                                 "page shows")

        if (sizes[path] or 0) > MAX_PLOT_BYTES:
            raise too_large(sizes[path] or 0)

        def download() -> tuple[int, bytes | None]:
            """(size, bytes); no bytes when the file is too large (the listing may not have known its size)."""
            with tempfile.TemporaryDirectory(prefix="plot-") as tmp:
                local = Path(self.client.download_artifacts(run_id, path, dst_path=tmp))
                size = local.stat().st_size
                return size, None if size > MAX_PLOT_BYTES else local.read_bytes()

        found = self._find(f"{path} of run {run_id}", download)
        if found is None:
            return None
        size, data = found
        if data is None:
            raise too_large(size)
        return data

    def _find(self, what: str, fn: Callable[[], T]) -> T | None:
        """``fn()``, or None when MLflow has no such thing (or hides it: see ABSENT_CODES)."""

        def call() -> T | None:
            try:
                return fn()
            except MlflowException as exc:
                if exc.error_code in ABSENT_CODES:
                    return None
                raise

        return self._call(what, call)

    def logged_model_id(self, model_uri: str, run_id: str) -> str | None:
        """The id of the logged model ``model_uri`` names (None for a ``runs:/`` URI), after checking that it and
        the run ``run_id`` exist: registering a version of something that does not exist is refused (422)
        before anything is created."""
        cannot = ("none exists, or MLflow does not let registry-proxy's user read it: it needs READ on the "
                  "experiment")
        if self._find(f"run {run_id}", lambda: self.client.get_run(run_id)) is None:
            raise Unprocessable(f"run_id {run_id!r} names no run registry-proxy can read ({cannot})")
        logged = LOGGED_MODEL_URI.match(model_uri)
        if logged:
            model_id = logged.group(1)
            if self._find(f"logged model {model_id}", lambda: self.client.get_logged_model(model_id)) is None:
                raise Unprocessable(f"model_uri {model_uri!r} names no logged model registry-proxy can read "
                                    f"({cannot})")
            return model_id
        in_run = RUN_URI.match(model_uri)
        if in_run:
            source_run, path = in_run.groups()
            files = self._find(f"artifacts of run {source_run}", lambda: self.client.list_artifacts(source_run, path))
            if not files:
                raise Unprocessable(f"model_uri {model_uri!r} names no logged model: run {source_run} holds nothing "
                                    f"at {path!r} that registry-proxy can read ({cannot})")
            return None
        raise Unprocessable(f"model_uri {model_uri!r} names no logged model: give models:/m-<id> (what log_model "
                            "returns) or runs:/<run_id>/<path>")

    def register(self, name: str, model_uri: str, run_id: str, job_id: str, tags: dict[str, str]) -> ModelVersion:
        """The version of ``name`` registered for ``job_id``: found by its job tag, or created from the logged
        model (the registered model too, on first use; removed again if its first version cannot be made).
        Only registry-proxy's MLflow user may do this."""
        check_job_id(job_id)
        model_id = self.logged_model_id(model_uri, run_id)
        created = False
        try:
            self._call(f"model {name!r}", lambda: self.client.get_registered_model(name), name)
        except NotFound:
            self._call(f"model {name!r}", lambda: self.client.create_registered_model(name))
            created = True
        escaped = name.replace("'", "\\'")
        try:
            found = self._call(f"versions of {name!r}", lambda: self.client.search_model_versions(
                f"name = '{escaped}' and tags.`{Tag.JOB_ID}` = '{job_id}'", max_results=10))
            if found:
                return found[0]
            # The client's create_model_version, not mlflow.register_model: the latter also tags the logged
            # model, which lives in the trainer's experiment, where registry-proxy's MLflow user may only read.
            return self._call(f"a new version of {name!r}", lambda: self.client.create_model_version(
                name, source=model_uri, run_id=run_id, model_id=model_id,
                tags={Tag.JOB_ID: job_id, Tag.RUN_ID: run_id, **tags}), name)
        except Exception:
            if created:
                self._forget(name)
            raise

    def _forget(self, name: str) -> None:
        """Deletes a registered model this call created and could not give a version (best effort)."""
        try:
            self.client.delete_registered_model(name)
        except Exception as exc:  # noqa: BLE001 - the failure that brought us here is the one to report
            log.warning("could not delete the empty registered model %r: %s", name, exc)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self._call(f"alias {alias} of {name!r}", lambda: self.client.set_registered_model_alias(name, alias, version),
                   name)

    def delete_alias(self, name: str, alias: str) -> None:
        self._call(f"alias {alias} of {name!r}", lambda: self.client.delete_registered_model_alias(name, alias), name)

    def set_tags(self, name: str, version: str, tags: dict[str, object]) -> None:
        for key, value in tags.items():
            if value is None:
                continue
            self._call(f"tags of version {version} of {name!r}",
                       partial(self.client.set_model_version_tag, name, version, key, str(value)))

    def model_tag(self, name: str, key: str) -> str | None:
        """A tag of the registered model itself (not of a version)."""
        return (self.get_model(name).tags or {}).get(key)

    def set_model_tag(self, name: str, key: str, value: str | None) -> None:
        """Sets a tag of the registered model; ``None`` removes it."""
        if value is None:
            self._call(f"tag {key} of {name!r}", lambda: self.client.delete_registered_model_tag(name, key), name)
        else:
            self._call(f"tag {key} of {name!r}", lambda: self.client.set_registered_model_tag(name, key, value), name)

    def ping(self) -> None:
        self._call("registered models", lambda: self.client.search_registered_models(max_results=1))


def failed_validation(version: ModelVersion) -> str | None:
    """Why a version may not be promoted, or None when it may."""
    status = str(version.status or "READY").upper()
    if status != "READY":
        return f"version {version.version} is {status.lower()}, not ready"
    for key in VALIDATION_TAGS:
        value = (version.tags or {}).get(key)
        if value is not None and str(value).lower() in FAILED_VALUES:
            return f"version {version.version} failed validation ({key}={value})"
    return None


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:300]
