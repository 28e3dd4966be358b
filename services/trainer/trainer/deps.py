"""FastAPI dependencies, as ``Annotated`` aliases over the context the lifespan keeps on ``app.state.ctx``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from mlops_common.auth import bearer_token
from trainer.context import TrainerContext
from trainer.datasets import DatasetStore
from trainer.jobs import JobStore
from trainer.settings import TrainerSettings


def get_context(request: Request) -> TrainerContext:
    ctx: TrainerContext = request.app.state.ctx
    return ctx


def settings_of(ctx: Annotated[TrainerContext, Depends(get_context)]) -> TrainerSettings:
    return ctx.settings


def store_of(ctx: Annotated[TrainerContext, Depends(get_context)]) -> JobStore:
    return ctx.store


def datasets_of(ctx: Annotated[TrainerContext, Depends(get_context)]) -> DatasetStore:
    return ctx.datasets


def bearer(request: Request) -> str | None:
    """The caller's own token, forwarded to registry-proxy when an approver changes a policy with a retrain."""
    return bearer_token(request.headers.get("authorization"))


Ctx = Annotated[TrainerContext, Depends(get_context)]
Settings = Annotated[TrainerSettings, Depends(settings_of)]
Store = Annotated[JobStore, Depends(store_of)]
Datasets = Annotated[DatasetStore, Depends(datasets_of)]
CallerToken = Annotated[str | None, Depends(bearer)]
