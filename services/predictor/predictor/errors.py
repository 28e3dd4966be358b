"""The predictor's refusals: the shared :class:`~mlops_common.errors.ServiceError` family, spelled once here."""

from __future__ import annotations

from mlops_common.errors import Unavailable
from mlops_common.names import PRODUCTION_ALIAS


def not_serving(model_name: str) -> Unavailable:
    """No version is served (nothing holds the alias yet, or the first one is still loading)."""
    return Unavailable(f"no production version of model {model_name!r} is being served yet: "
                       f"nothing holds the '{PRODUCTION_ALIAS}' alias, or it is still loading")


def not_started() -> Unavailable:
    return Unavailable("the predictor is starting: its lifespan has not run yet")
