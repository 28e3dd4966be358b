"""The predictor: serves the production version of one registered model and follows the registry."""

__version__ = "0.1.0"
