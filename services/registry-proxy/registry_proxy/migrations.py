"""Apply the Alembic migrations programmatically at start-up (one replica at a time)."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

SCRIPT_LOCATION = Path(__file__).resolve().parent / "alembic"
MIGRATION_LOCK_KEY = 0x5265_6750  # arbitrary constant shared by every replica

log = logging.getLogger(__name__)


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    return config


def upgrade(engine: Engine, attempts: int = 10, delay: float = 1.0) -> None:
    """``alembic upgrade head`` under an advisory lock; retries while the database is not reachable yet (backoff
    from ``delay`` doubling up to four times it, with jitter)."""

    def migrate() -> None:
        with engine.connect() as conn:
            postgres = conn.dialect.name == "postgresql"
            if postgres:
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
                conn.commit()
            try:
                config = alembic_config()
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
                conn.commit()
            finally:
                if postgres:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
                    conn.commit()

    def unreachable(state: RetryCallState) -> None:
        log.warning("database not reachable for migrations (attempt %d/%d): %s", state.attempt_number, attempts,
                    state.outcome.exception() if state.outcome else "?")

    retrying = Retrying(stop=stop_after_attempt(attempts),
                        wait=wait_exponential_jitter(initial=delay, max=4 * delay, jitter=delay),
                        retry=retry_if_exception_type(OperationalError), before_sleep=unreachable, reraise=True)
    retrying(migrate)
