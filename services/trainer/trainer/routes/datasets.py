"""POST /datasets (multipart upload of a CSV or Parquet file), GET /datasets, GET /datasets/{id}."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, UploadFile

from trainer.datasets import DatasetError, DatasetTooLarge
from trainer.deps import Datasets
from trainer.settings import get_settings

router = APIRouter(tags=["datasets"])
CHUNK = 1024 * 1024


@router.post("/datasets", status_code=201, max_body_size=get_settings().max_upload_bytes + 64 * 1024)
def upload(file: UploadFile, datasets: Datasets) -> dict[str, Any]:
    def chunks():
        while chunk := file.file.read(CHUNK):
            yield chunk

    try:
        snap = datasets.ingest_stream(chunks(), source=f"upload:{file.filename or 'unnamed'}",
                                      name=file.filename or "")
    except DatasetTooLarge as exc:
        raise HTTPException(413, str(exc)) from exc
    except DatasetError as exc:
        raise HTTPException(422, str(exc)) from exc
    return snap.public()


@router.get("/datasets")
def list_datasets(datasets: Datasets) -> dict[str, Any]:
    return {"datasets": [s.public() for s in datasets.list()]}


@router.get("/datasets/{dataset_id}")
def get_dataset(dataset_id: str, datasets: Datasets) -> dict[str, Any]:
    snap = datasets.get(dataset_id)
    if snap is None:
        raise HTTPException(404, f"no dataset {dataset_id!r}")
    return snap.public()
