"""The trainer: an HTTP API that enqueues and reports retrain jobs, and Celery workers that run them."""

__version__ = "0.1.0"
