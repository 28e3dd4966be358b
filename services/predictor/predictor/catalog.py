"""The models one predictor serves: MODEL_NAME (``/predict``) and those MODELS names (or, with ``*``, every
registered model that has a ``production`` alias, looked up again periodically). Each is a
:class:`~predictor.service.PredictorService` following its own aliases with its own micro-batcher; the versions
loaded on demand are shared in one :class:`~predictor.versions.VersionPool`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from mlops_common.errors import NotFound
from predictor.following import MlflowAliases
from predictor.service import PredictorService
from predictor.settings import PredictorSettings
from predictor.versions import VersionPool

log = logging.getLogger(__name__)

ServiceFactory = Callable[[PredictorSettings], PredictorService]


class ModelCatalog:
    def __init__(self, settings: PredictorSettings, factory: ServiceFactory) -> None:
        self.settings = settings
        self.factory = factory
        self.services: dict[str, PredictorService] = {}
        self.pool = VersionPool(settings, self.services)
        for name in settings.model_names:
            self._add(name)
        self.default = self.services[settings.model_name]
        self.started = False
        self.task: asyncio.Task[None] | None = None

    def _add(self, name: str) -> PredictorService:
        cfg = self.settings if name == self.settings.model_name else self.settings.model_copy(
            update={"model_name": name})
        service = self.services[name] = self.factory(cfg)
        service.versions = self.pool
        return service

    def get(self, name: str) -> PredictorService:
        service = self.services.get(name)
        if service is None:
            raise self.unknown(name)
        return service

    def unknown(self, name: str) -> NotFound:
        return NotFound(f"unknown model {name!r}: this predictor serves "
                        f"{', '.join(repr(n) for n in self.services)}")

    async def start(self) -> None:
        for service in self.services.values():
            await service.start()
        self.started = True
        if self.settings.discover_models:
            self.task = asyncio.get_running_loop().create_task(self._discover_loop(), name="model-discovery")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        await self.pool.stop()
        for service in self.services.values():
            await service.stop()

    async def discover(self, reader: Any) -> list[str]:
        """Start serving the models with a `production` alias not served yet; the names added."""
        names = await asyncio.to_thread(reader.with_production)
        added = [name for name in names if name not in self.services]
        for name in added:
            await self._add(name).start()
            log.info("now also serving model %s (found with a production alias)", name)
        return added

    async def _discover_loop(self) -> None:
        reader = MlflowAliases(self.settings.mlflow_tracking_uri)
        while True:
            try:
                await self.discover(reader)
            except Exception as exc:  # noqa: BLE001 - retried at the next period
                log.warning("could not list the models with a production alias: %s", exc)
            await asyncio.sleep(self.settings.models_discovery_seconds)

    def summary(self) -> list[dict[str, Any]]:
        return [{"model_name": name, "model_version": svc.model.version if svc.model else None,
                 "default": svc is self.default, "loaded_versions": self.pool.loaded(name)}
                for name, svc in self.services.items()]
