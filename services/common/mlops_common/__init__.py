"""Code shared by every service: typed settings, the model spec, the alias-event schema, MLflow helpers."""

__version__ = "0.1.0"
