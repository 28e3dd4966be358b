"""Where versions are loaded: a separate loader process by default, so the serving process never spends
the GIL on downloading and deserialising a model; it only unpickles the result (milliseconds)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from predictor.loading import (
    LoadedModel,
    ModelLoadError,
    ModelTrust,
    assemble,
    fetch_version,
    load_version,
    preload,
)
from predictor.settings import PredictorSettings

log = logging.getLogger(__name__)


class ModelLoader:
    def __init__(self, settings: PredictorSettings) -> None:
        self.settings = settings
        self.in_process = not settings.load_in_subprocess
        self.pool: ProcessPoolExecutor | None = None
        # What either path may deserialise: the project's allowlist plus the settings, never the model's own.
        self.trust = ModelTrust(extra_types=tuple(settings.model_trusted_types),
                                allow_pickle=settings.model_allow_pickle)

    def _pool(self) -> ProcessPoolExecutor:
        if self.pool is None:
            self.pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        return self.pool

    def start(self) -> None:
        """Start the loader process and its imports now, not at the first alias change."""
        if not self.in_process:
            self._pool().submit(preload)

    async def load(self, name: str, version: str) -> LoadedModel:
        uri, cache = self.settings.mlflow_tracking_uri, self.settings.model_cache_dir
        if self.in_process:
            return await asyncio.to_thread(load_version, uri, name, version, cache, self.trust)
        loop = asyncio.get_running_loop()
        try:
            fetched = await loop.run_in_executor(self._pool(), fetch_version, uri, name, version, cache,
                                                 self.trust)
        except BrokenProcessPool as exc:
            self.pool = None
            raise ModelLoadError(f"the loader process died while loading {name} version {version}") from exc
        return assemble(fetched)

    def stop(self) -> None:
        if self.pool is not None:
            with contextlib.suppress(Exception):
                self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None
