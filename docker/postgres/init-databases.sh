#!/bin/bash
# Runs once, on the first start of an empty Postgres volume (official postgres image and the local stand-in
# alike): creates the `mlflow` and `registry` databases, each owned by its own login role.
set -euo pipefail
: "${MLFLOW_DB_PASSWORD:?set MLFLOW_DB_PASSWORD}" "${REGISTRY_DB_PASSWORD:?set REGISTRY_DB_PASSWORD}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v mlflow_password="$MLFLOW_DB_PASSWORD" -v registry_password="$REGISTRY_DB_PASSWORD" <<'SQL'
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;
CREATE ROLE registry LOGIN PASSWORD :'registry_password';
CREATE DATABASE registry OWNER registry;
SQL
echo "created databases mlflow and registry"
