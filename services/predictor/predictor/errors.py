"""The predictor's refusals: the shared :class:`~mlops_common.errors.ServiceError` family, spelled once here."""

from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response

from mlops_common.errors import Unavailable, error_response
from mlops_common.names import PRODUCTION_ALIAS


def not_serving(model_name: str) -> Unavailable:
    """No version is served (nothing holds the alias yet, or the first one is still loading)."""
    return Unavailable(f"no production version of model {model_name!r} is being served yet: "
                       f"nothing holds the '{PRODUCTION_ALIAS}' alias, or it is still loading")


def not_started() -> Unavailable:
    return Unavailable("the predictor is starting: its lifespan has not run yet")


async def invalid_request(_: Request, exc: RequestValidationError) -> Response:
    """A body that does not validate (``/feedback``): 422 with the fields at fault and why, as one sentence
    (``request_id: Field required; instances: Extra inputs are not permitted``). The input is not echoed."""
    detail = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()) if x != 'body') or 'body'}: {e.get('msg')}"
                       for e in exc.errors()) or "invalid request"
    return error_response(422, detail)
