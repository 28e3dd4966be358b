#!/bin/sh
# mlflow server with the stack's defaults; MLFLOW_BACKEND_STORE_URI and MLFLOW_ARTIFACTS_DESTINATION are read
# by mlflow itself. Extra arguments are passed on.
set -eu
: "${MLFLOW_BACKEND_STORE_URI:?set MLFLOW_BACKEND_STORE_URI, e.g. postgresql://mlflow:PASSWORD@postgres:5432/mlflow}"
exec mlflow server \
  --host "${MLFLOW_HOST:-0.0.0.0}" \
  --port "${MLFLOW_PORT:-5000}" \
  --workers "${MLFLOW_WORKERS:-2}" \
  --serve-artifacts \
  --allowed-hosts "${MLFLOW_SERVER_ALLOWED_HOSTS:-mlflow,mlflow:*,localhost,localhost:*,127.0.0.1,127.0.0.1:*}" \
  --expose-prometheus "${MLFLOW_PROMETHEUS_DIR:-/var/lib/mlflow/metrics}" \
  "$@"
