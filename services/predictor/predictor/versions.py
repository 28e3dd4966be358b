"""Versions other than production, loaded on first request for ``/models/{name}/versions/{v}/predict``.

Each held version has its own micro-batcher (scoring always with that version). The versions held, with every
model's production version counted, stay within MAX_LOADED_VERSIONS (and MAX_LOADED_BYTES): the least
recently used held version is unloaded first; a production version is never unloaded here.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlops_common.errors import NotFound, Unavailable
from predictor import metrics
from predictor.batching import MicroBatcher
from predictor.loading import LoadedModel
from predictor.settings import PredictorSettings

if TYPE_CHECKING:
    from predictor.service import PredictorService

log = logging.getLogger(__name__)

Key = tuple[str, str]
# How long an answer about a version's existence is trusted (a missing version may be registered later).
MISSING_TTL_SECONDS = 10.0


def loading(name: str, version: str, retry_after: int = 1) -> Unavailable:
    return Unavailable(f"version {version} of model {name!r} is loading: retry shortly",
                       headers={"Retry-After": str(retry_after)})


def unknown_version(name: str, version: str) -> NotFound:
    return NotFound(f"model {name!r} has no version {version!r}")


@dataclass
class Held:
    model: LoadedModel
    batcher: MicroBatcher
    metrics: metrics.ModelMetrics


class VersionPool:
    def __init__(self, settings: PredictorSettings, services: Mapping[str, PredictorService]) -> None:
        self.settings = settings
        self.services = services
        self.held: OrderedDict[Key, Held] = OrderedDict()
        self.loading: dict[Key, asyncio.Task[None]] = {}
        self.failed: dict[Key, tuple[str, float]] = {}
        self.missing: dict[Key, float] = {}
        self.retiring: set[asyncio.Task[None]] = set()

    async def acquire(self, service: PredictorService, version: str) -> tuple[LoadedModel, MicroBatcher]:
        """The model and batcher for ``version`` of ``service``'s model; 404 when it is not registered, 503
        with Retry-After while it loads (the first request starts the load)."""
        current = service.follower.current
        if current is not None and current.version == version and service.batcher is not None:
            return current, service.batcher
        key = (service.name, version)
        held = self.held.get(key)
        if held is not None:
            self.held.move_to_end(key)
            return held.model, held.batcher
        if key in self.loading:
            raise loading(*key)
        failure = self.failed.get(key)
        now = time.monotonic()
        if failure is not None and now < failure[1]:
            raise Unavailable(f"version {version} of model {service.name!r} could not be loaded: {failure[0]}",
                              headers={"Retry-After": str(math.ceil(failure[1] - now))})
        kept = next((m for m in (service.follower.previous, service.follower.standby)
                     if m is not None and m.version == version), None)
        if kept is not None:
            return self._hold(key, kept)
        if not version.isdigit() or self.missing.get(key, 0.0) > now or not await self._exists(service, version):
            raise unknown_version(*key)
        if key not in self.loading and key not in self.held:
            self.loading[key] = asyncio.get_running_loop().create_task(self._load(service, version),
                                                                       name=f"load-{service.name}-{version}")
        raise loading(*key)

    def ready(self, service: PredictorService, version: str) -> tuple[LoadedModel, MicroBatcher] | None:
        """The model and batcher for ``version`` if it is held (the canary's and shadow's way in): never waits
        nor refuses; a version not held yet starts loading and is None until it is."""
        current = service.follower.current
        if current is not None and current.version == version and service.batcher is not None:
            return current, service.batcher
        held = self.held.get((service.name, version))
        if held is not None:
            self.held.move_to_end((service.name, version))
            return held.model, held.batcher
        self.prepare(service, version)
        return None

    def prepare(self, service: PredictorService, version: str) -> None:
        """Start loading ``version`` unless it is held, loading, production or failed recently."""
        key = (service.name, version)
        current = service.follower.current
        if (key in self.held or key in self.loading or not version.isdigit()
                or (current is not None and current.version == version)):
            return
        failure = self.failed.get(key)
        if failure is not None and time.monotonic() < failure[1]:
            return
        kept = next((m for m in (service.follower.previous, service.follower.standby)
                     if m is not None and m.version == version), None)
        if kept is not None:
            self._hold(key, kept)
            return
        self.loading[key] = asyncio.get_running_loop().create_task(self._load(service, version),
                                                                   name=f"load-{service.name}-{version}")

    def loaded(self, name: str) -> list[str]:
        return [version for (model, version) in self.held if model == name]

    async def _exists(self, service: PredictorService, version: str) -> bool:
        exists = getattr(service.follower.aliases, "exists", None)
        if exists is None:
            return True  # a source of versions that cannot say: the load tells
        try:
            found = bool(await asyncio.to_thread(exists, service.name, version))
        except Exception as exc:  # noqa: BLE001 - the registry is unreachable: say so, do not guess
            raise Unavailable(f"could not check version {version} of model {service.name!r} in the registry: "
                              f"{type(exc).__name__}", headers={"Retry-After": "5"}) from None
        if not found:
            self.missing[(service.name, version)] = time.monotonic() + MISSING_TTL_SECONDS
        return found

    async def _load(self, service: PredictorService, version: str) -> None:
        key = (service.name, version)
        try:
            model = await service.follower.loader.load(service.name, version)
        except Exception as exc:  # noqa: BLE001 - refused with 503 until the retry time
            log.warning("%s: version %s could not be loaded on demand: %s", service.name, version, exc)
            self.failed[key] = (str(exc)[:300], time.monotonic() + self.settings.load_retry_seconds)
            return
        finally:
            self.loading.pop(key, None)
        metrics.LOAD_SECONDS.observe(model.load_seconds)
        self.failed.pop(key, None)
        self._hold(key, model)
        log.info("%s: version %s loaded on demand in %.2fs", service.name, version, model.load_seconds)

    def _hold(self, key: Key, model: LoadedModel) -> tuple[LoadedModel, MicroBatcher]:
        batcher = MicroBatcher(current_model=lambda: model, after_batch=self._after_batch,
                               max_batch_size=self.settings.max_batch_size, max_wait_seconds=0,
                               inline_max_rows=self.settings.inline_predict_max_rows)
        held = Held(model=model, batcher=batcher, metrics=metrics.ModelMetrics(model))
        held.batcher.start()
        self.held[key] = held
        self._evict(keep=key)
        metrics.VERSIONS_LOADED.labels(key[0]).set(len(self.loaded(key[0])))
        return model, held.batcher

    def _after_batch(self, model: LoadedModel, _: list, values: list) -> None:
        held = self.held.get((model.name, model.version))
        if held is not None:
            held.metrics.observe_batch(values)

    def _production(self) -> dict[str, LoadedModel]:
        return {name: svc.follower.current for name, svc in self.services.items() if svc.follower.current}

    def _evict(self, keep: Key | None = None) -> None:
        production = self._production()
        redundant = [k for k in self.held if k != keep and k[0] in production and production[k[0]].version == k[1]]
        for key in redundant:
            self._unload(key)

        def over() -> bool:
            if len(self.held) + len(production) > self.settings.max_loaded_versions:
                return True
            limit = self.settings.max_loaded_bytes
            return bool(limit) and (sum(h.model.size_bytes for h in self.held.values())
                                    + sum(m.size_bytes for m in production.values())) > limit

        while over():
            victim = next((k for k in self.held if k != keep), None)
            if victim is None:
                return
            self._unload(victim)
            metrics.VERSION_EVICTIONS.labels(victim[0]).inc()
            log.info("%s: version %s unloaded (least recently used)", *victim)

    def _unload(self, key: Key) -> None:
        held = self.held.pop(key)
        task = asyncio.get_running_loop().create_task(held.batcher.drain(), name=f"retire-{key[0]}-{key[1]}")
        self.retiring.add(task)
        task.add_done_callback(self.retiring.discard)
        metrics.VERSIONS_LOADED.labels(key[0]).set(len(self.loaded(key[0])))

    async def stop(self) -> None:
        for task in list(self.loading.values()):
            task.cancel()
        for held in self.held.values():
            await held.batcher.stop()
        self.held.clear()
