#!/bin/bash
# Sourced by the postgres image's entrypoint on the first start of an empty volume: the databases `mlflow` and
# `mlflow_auth` (role `mlflow`) and `registry` (role `registry`), with the passwords from the Secret
# mlops-postgres (the same files docker/postgres/init-databases.sh reads in compose).
mlops_mlflow_pw=$(cat "$MLFLOW_DB_PASSWORD_FILE") && mlops_registry_pw=$(cat "$REGISTRY_DB_PASSWORD_FILE") || exit 1
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v mlflow_password="$mlops_mlflow_pw" -v registry_password="$mlops_registry_pw" <<'SQL' || exit 1
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;
CREATE DATABASE mlflow_auth OWNER mlflow;
CREATE ROLE registry LOGIN PASSWORD :'registry_password';
CREATE DATABASE registry OWNER registry;
SQL
unset mlops_mlflow_pw mlops_registry_pw
