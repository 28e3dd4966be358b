"""Following the registry: alias events on Redis plus polling; background load, warm-up and atomic swap."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis.asyncio as aioredis
from mlflow.tracking import MlflowClient
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from mlops_common import mlflow_utils
from mlops_common.events import ModelEvent
from mlops_common.names import PRODUCTION_ALIAS, Tag
from mlops_common.observability import bind_log_context, log_context
from mlops_common.rollout import ROLLOUT_EVENT_ALIAS, RolloutSplit
from predictor import metrics
from predictor.loader import ModelLoader
from predictor.loading import LoadedModel
from predictor.settings import PredictorSettings

log = logging.getLogger(__name__)


class AliasReader(Protocol):
    def version(self, name: str, alias: str) -> str | None:
        """The version that holds ``alias`` (None when nothing does); blocking, called in a worker thread."""


class MlflowAliases:
    """Aliases as MLflow's registry has them."""

    def __init__(self, tracking_uri: str) -> None:
        self.client: MlflowClient = mlflow_utils.client(tracking_uri)  # sets MLflow's global tracking URI

    def version(self, name: str, alias: str) -> str | None:
        found = mlflow_utils.version_by_alias(self.client, name, alias)
        return str(found.version) if found is not None else None

    def state(self, name: str) -> tuple[dict[str, str], RolloutSplit]:
        """The model's aliases (alias → version) and its rollout split (the ``mlops.rollout`` tag), from one
        read of the registered model; no model is no aliases and no split. Blocking."""
        try:
            model = self.client.get_registered_model(name)
        except Exception as exc:
            if mlflow_utils.is_not_found(exc) or (getattr(exc, "error_code", None) == "PERMISSION_DENIED"
                                                  and not mlflow_utils.model_exists(self.client, name)):
                return {}, RolloutSplit()
            raise
        aliases = {str(alias): str(version) for alias, version in (model.aliases or {}).items()}
        return aliases, RolloutSplit.from_tag((model.tags or {}).get(Tag.ROLLOUT))

    def exists(self, name: str, version: str) -> bool:
        """Whether ``version`` of ``name`` is registered; blocking."""
        try:
            self.client.get_model_version(name, version)
        except Exception as exc:
            if mlflow_utils.is_not_found(exc):
                return False
            raise
        return True

    def with_production(self) -> list[str]:
        """The registered models that have a ``production`` alias; blocking."""
        names: list[str] = []
        token = None
        while True:
            page = self.client.search_registered_models(max_results=200, page_token=token)
            names += [m.name for m in page if PRODUCTION_ALIAS in (getattr(m, "aliases", None) or {})]
            token = page.token
            if not token:
                return names


@dataclass
class FollowerStatus:
    alias_version: str | None = None
    last_check_at: float | None = None
    last_error: str | None = None
    events_connected: bool = False
    events_received: int = 0
    reloads: dict[str, int] = field(default_factory=lambda: {"success": 0, "failure": 0})
    failed_versions: dict[str, str] = field(default_factory=dict)
    last_swap: dict[str, Any] | None = None
    standby_version: str | None = None
    rollout: RolloutSplit = field(default_factory=RolloutSplit)


class ModelFollower:
    """Keeps ``current`` equal to the version that holds the ``production`` alias.

    One reconcile loop does all loading (so two loads never race); alias events and the poll timer only wake
    it: what an alias points at is always read from MLflow, never taken from an event. A new version is loaded
    and warmed up in a worker thread while the old one keeps serving, then the reference is swapped in one
    assignment. A version that fails is not swapped in and is retried later.
    """

    def __init__(self, settings: PredictorSettings, on_swap: Callable[[LoadedModel | None, LoadedModel], None],
                 loader: ModelLoader | None = None, aliases: AliasReader | None = None) -> None:
        self.settings = settings
        self.name = settings.model_name
        self.on_swap = on_swap
        self.loader = loader or ModelLoader(settings)
        self.aliases = aliases  # MLflow's, made by start() unless given
        self.current: LoadedModel | None = None
        self.previous: LoadedModel | None = None
        self.status = FollowerStatus()
        self.wake = asyncio.Event()
        self.retry_at: dict[str, tuple[int, float]] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.woken_at: float | None = None
        # After an event about `challenger`, the version MLflow says holds it is loaded ahead of its promotion
        # and kept here.
        self.standby: LoadedModel | None = None
        self.check_challenger = False
        # Told the rollout split each time it changes (the service routes canary and shadow traffic with it).
        self.on_split: Callable[[RolloutSplit], None] | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.aliases is None:
            self.aliases = MlflowAliases(self.settings.mlflow_tracking_uri)
        self.loader.start()
        self.tasks = [loop.create_task(self._reconcile_loop(), name="reconcile"),
                      loop.create_task(self._events_loop(), name="alias-events")]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.loader.stop()

    def poke(self) -> None:
        if self.woken_at is None:
            self.woken_at = time.monotonic()
        self.wake.set()

    async def _reconcile_loop(self) -> None:
        bind_log_context(model=self.name)  # this task's own context
        while True:
            try:
                await self.reconcile()
                if self.check_challenger:
                    await self._prefetch()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep following whatever happens
                log.exception("reconcile failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=self.settings.poll_interval_seconds)
            self.wake.clear()

    async def reconcile(self) -> None:
        reason = "event" if self.woken_at is not None else "poll"
        triggered = self.woken_at or time.monotonic()
        self.woken_at = None
        assert self.aliases is not None
        state = getattr(self.aliases, "state", None)  # aliases and split in one read, where the source can
        try:
            if state is not None:
                aliases, split = await asyncio.to_thread(state, self.name)
                target = aliases.get(PRODUCTION_ALIAS)
            else:
                target, split = await asyncio.to_thread(self.aliases.version, self.name, PRODUCTION_ALIAS), None
        except Exception as exc:  # noqa: BLE001 - a registry read that fails is retried at the next poll
            self.status.last_error = f"could not read the production alias: {type(exc).__name__}: {exc}"[:500]
            log.warning("%s", self.status.last_error)
            return
        if split is not None and split != self.status.rollout:
            log.info("%s: rollout split now %s", self.name, split.to_tag())
            self.status.rollout = split
            if self.on_split is not None:
                self.on_split(split)
        self.status.last_check_at = time.time()
        self.status.alias_version = target
        if target is None or (self.current is not None and self.current.version == target):
            self.status.last_error = None  # in step with the alias: no problem pending
            return
        attempts, retry_at = self.retry_at.get(target, (0, 0.0))
        if attempts and time.monotonic() < retry_at:
            return
        with log_context(version=target):
            await self._load(target, reason, triggered)

    async def _prefetch(self) -> None:
        """Load the version that holds ``challenger`` in MLflow ahead of its promotion (kept as ``standby``).
        The event that woke us only says the alias moved; which version holds it is MLflow's answer."""
        self.check_challenger = False
        if not self.settings.prefetch_challenger:
            return
        assert self.aliases is not None
        try:
            version = await asyncio.to_thread(self.aliases.version, self.name, mlflow_utils.CHALLENGER)
        except Exception as exc:  # noqa: BLE001 - a prefetch is an optimisation only
            log.warning("%s: could not read the challenger alias: %s", self.name, exc)
            return
        if (version is None
                or (self.current is not None and self.current.version == version)
                or (self.standby is not None and self.standby.version == version)):
            return
        with log_context(version=version):
            log.info("%s: prefetching challenger version %s", self.name, version)
            try:
                self.standby = await self.loader.load(self.name, version)
            except Exception as exc:  # noqa: BLE001 - a prefetch is an optimisation only
                log.warning("%s: could not prefetch challenger version %s: %s", self.name, version, exc)
                return
        metrics.LOAD_SECONDS.observe(self.standby.load_seconds)
        self.status.standby_version = version

    async def _load(self, version: str, reason: str, triggered: float) -> None:
        if self.previous is not None and self.previous.version == version:
            new = self.previous
            log.info("%s: swapping back to version %s kept in memory", self.name, version)
        elif self.standby is not None and self.standby.version == version:
            new, self.standby = self.standby, None
            self.status.standby_version = None
            reason += ", prefetched"
            log.info("%s: swapping in version %s prefetched as challenger", self.name, version)
        else:
            log.info("%s: loading version %s (%s)", self.name, version, reason)
            try:
                new = await self.loader.load(self.name, version)
            except Exception as exc:  # noqa: BLE001 - the old version keeps serving; retried later
                attempts = self.retry_at.get(version, (0, 0.0))[0] + 1
                delay = min(self.settings.load_retry_seconds * 2 ** (attempts - 1), 600.0)
                self.retry_at[version] = (attempts, time.monotonic() + delay)
                self.status.reloads["failure"] += 1
                self.status.failed_versions[version] = str(exc)[:500]
                self.status.last_error = f"version {version} not swapped in: {exc}"[:500]
                metrics.RELOADS.labels(self.name, "failure").inc()
                log.error("%s: version %s not swapped in, still serving %s: %s", self.name, version,
                          self.current.version if self.current else "nothing", exc)
                return
            metrics.LOAD_SECONDS.observe(new.load_seconds)
        old = self.current
        self.current = new  # the swap: requests pick up one reference or the other, never half of each
        self.previous = old if self.settings.keep_previous_model else None
        self.retry_at.pop(version, None)
        self.status.failed_versions.pop(version, None)
        self.status.last_error = None
        self.status.reloads["success"] += 1
        metrics.RELOADS.labels(self.name, "success").inc()
        self.status.last_swap = {"from_version": old.version if old else None, "to_version": version,
                                 "reason": reason, "seconds": round(time.monotonic() - triggered, 3)}
        self.on_swap(old, new)
        log.info("%s: now serving version %s (was %s)", self.name, version, old.version if old else None)

    async def _events_loop(self) -> None:
        """Listens for alias events for ever. Subscribing is retried with exponential backoff and jitter (1 s
        doubling up to 30 s); after a subscription that worked and then broke, the waits start again from 1 s."""
        bind_log_context(model=self.name)  # this task's own context
        broken: Exception | None = None
        while True:
            async for attempt in AsyncRetrying(wait=wait_exponential_jitter(initial=1, max=30, jitter=1),
                                               retry=retry_if_exception_type(Exception)):  # ends only if cancelled
                with attempt:
                    if broken is not None:  # the subscription that just broke: this round's first failed attempt
                        error, broken = broken, None
                        raise error
                    conn, pubsub = await self._subscribe()
            try:
                self.status.events_connected = True
                self.poke()  # events may have been missed while disconnected
                await self._listen(pubsub)
            except Exception as exc:  # noqa: BLE001 - events are advisory: polling goes on
                log.warning("alias events unavailable (%s); polling every %ss", exc,
                            self.settings.poll_interval_seconds)
                broken = exc
            finally:
                self.status.events_connected = False
                await _close(pubsub, conn)

    async def _subscribe(self) -> tuple[aioredis.Redis, Any]:
        conn = aioredis.from_url(self.settings.redis_url, health_check_interval=10, socket_keepalive=True,
                                 socket_connect_timeout=5)
        pubsub = conn.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.settings.model_events_channel)
        except BaseException:
            await _close(pubsub, conn)
            raise
        return conn, pubsub

    async def _listen(self, pubsub: Any) -> None:
        async for message in pubsub.listen():
            if message.get("type") != "message":
                continue
            try:
                event = ModelEvent.from_json(message["data"])
            except Exception:  # noqa: BLE001 - anyone may publish on the channel
                log.warning("ignoring a malformed model event: %r", message.get("data"))
                continue
            if event.model != self.name:
                continue
            # An event only wakes the reconcile loop, which reads the alias from MLflow: its version is
            # never trusted (anyone who can publish on the channel could name any version).
            if event.alias == PRODUCTION_ALIAS:
                self.status.events_received += 1
                self.poke()
            elif event.alias == ROLLOUT_EVENT_ALIAS:  # the split changed: read it (with the aliases) now
                self.status.events_received += 1
                self.wake.set()
            elif event.alias == mlflow_utils.CHALLENGER:
                self.status.events_received += 1
                self.check_challenger = True
                self.wake.set()


async def _close(pubsub: Any, conn: aioredis.Redis) -> None:
    with contextlib.suppress(Exception):
        await pubsub.aclose()
    with contextlib.suppress(Exception):
        await conn.aclose()
