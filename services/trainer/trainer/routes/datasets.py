"""POST /datasets (multipart upload of a CSV or Parquet file), GET /datasets, GET /datasets/{id}."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, UploadFile

from mlops_common.auth import Reader, Trainer
from mlops_common.errors import NotFound, TooLarge, Unprocessable
from trainer.datasets import DatasetError, DatasetTooLarge
from trainer.deps import Datasets
from trainer.schemas import DatasetList, DatasetView
from trainer.settings import TrainerSettings

CHUNK = 1024 * 1024
MAX_NAME = 255
# Room for the multipart envelope around an upload of MAX_UPLOAD_BYTES.
MULTIPART_OVERHEAD = 64 * 1024


def plain_file_name(name: str | None) -> str:
    """The upload's file name, refused (422) unless it is a plain name: no folders, no ``..``, no control
    characters. Snapshots are stored under their sha256, so the name is only recorded as the source."""
    if not name:
        return ""
    if len(name) > MAX_NAME:
        raise Unprocessable(f"file name: longer than {MAX_NAME} characters")
    if "/" in name or "\\" in name or name in (".", ".."):
        raise Unprocessable(f"file name: {name[:80]!r} is not a plain file name (no folders or '..')")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise Unprocessable("file name: control characters are not allowed")
    return name


def build_router(settings: TrainerSettings) -> APIRouter:
    """The routes; the upload's body limit (MAX_UPLOAD_BYTES plus multipart overhead) comes from ``settings``."""
    router = APIRouter(tags=["datasets"])
    router.add_api_route("/datasets", upload, methods=["POST"], status_code=201, response_model=DatasetView,
                         max_body_size=settings.max_upload_bytes + MULTIPART_OVERHEAD)
    router.add_api_route("/datasets", list_datasets, methods=["GET"], response_model=DatasetList)
    router.add_api_route("/datasets/{dataset_id}", get_dataset, methods=["GET"], response_model=DatasetView)
    return router


def upload(file: UploadFile, datasets: Datasets, _: Trainer) -> DatasetView:
    """Stores the file as a content-addressed snapshot (role scientist or higher); the same bytes give the
    same ``dataset_id``, whatever the file's name."""
    name = plain_file_name(file.filename)

    def chunks() -> Iterator[bytes]:
        while chunk := file.file.read(CHUNK):
            yield chunk

    try:
        snap = datasets.ingest_stream(chunks(), source=f"upload:{name or 'unnamed'}", name=name)
    except DatasetTooLarge as exc:
        raise TooLarge(str(exc)) from exc
    except DatasetError as exc:
        raise Unprocessable(str(exc)) from exc
    return DatasetView.model_validate(snap.public())


def list_datasets(datasets: Datasets, _: Reader) -> DatasetList:
    return DatasetList.model_validate({"datasets": [s.public() for s in datasets.list()]})


def get_dataset(dataset_id: str, datasets: Datasets, _: Reader) -> DatasetView:
    snap = datasets.get(dataset_id)
    if snap is None:
        raise NotFound(f"no dataset {dataset_id!r}")
    return DatasetView.model_validate(snap.public())
