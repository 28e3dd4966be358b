"""What a request needs, built once by the lifespan and kept on ``app.state.ctx``."""

from __future__ import annotations

from dataclasses import dataclass

from mlops_common.auth import RemoteAuthenticator
from predictor.catalog import ModelCatalog
from predictor.service import PredictorService
from predictor.settings import PredictorSettings


@dataclass
class PredictorContext:
    settings: PredictorSettings
    service: PredictorService  # MODEL_NAME's, answering /predict
    authenticator: RemoteAuthenticator
    catalog: ModelCatalog
