"""Everything a request needs, built once by the app's lifespan and kept on ``app.state.ctx``."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

from registry_proxy.events import EventPublisher
from registry_proxy.mlflow_registry import Registry
from registry_proxy.notifications import Notifier
from registry_proxy.settings import RegistrySettings


@dataclass
class AppContext:
    settings: RegistrySettings
    engine: Engine
    sessions: sessionmaker
    registry: Registry
    publisher: EventPublisher
    notifier: Notifier
