"""registry-proxy: the only door to MLflow's registry aliases — promotion gate, approvals, rollback, audit, DORA."""

__version__ = "0.1.0"
