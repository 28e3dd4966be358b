"""The trainer: an HTTP API that enqueues and reports retrain jobs, and Celery workers that run them."""

import os

__version__ = "0.1.0"

# A self-hosted stack does not phone home (set MLFLOW_DISABLE_TELEMETRY=false to opt in).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
