"""FastAPI dependencies over the predictor's context (``app.state.ctx``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from predictor.catalog import ModelCatalog
from predictor.context import PredictorContext
from predictor.errors import not_started
from predictor.service import PredictorService
from predictor.settings import PredictorSettings


def get_context(request: Request) -> PredictorContext:
    ctx: PredictorContext | None = getattr(request.app.state, "ctx", None)
    if ctx is None:
        raise not_started()
    return ctx


Ctx = Annotated[PredictorContext, Depends(get_context)]


def get_service(ctx: Ctx) -> PredictorService:
    return ctx.service


def get_catalog(ctx: Ctx) -> ModelCatalog:
    return ctx.catalog


def get_settings(ctx: Ctx) -> PredictorSettings:
    return ctx.settings


Service = Annotated[PredictorService, Depends(get_service)]
Catalog = Annotated[ModelCatalog, Depends(get_catalog)]
Settings = Annotated[PredictorSettings, Depends(get_settings)]
