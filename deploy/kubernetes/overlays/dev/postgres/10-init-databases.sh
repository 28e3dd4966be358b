#!/bin/bash
# Sourced by the postgres image's entrypoint on the first start of an empty volume: the databases `mlflow` and
# `mlflow_auth` (role `mlflow`), `registry` (role `registry`) and the predictors' served log `served_log` (role
# `servedlog`), with the passwords from the Secret mlops-postgres (the same files docker/postgres/init-databases.sh
# reads in compose). A volume initialised before `served_log` existed needs it by hand (psql -U postgres), with
# the Secret's served_log_db_password:
#   CREATE ROLE servedlog LOGIN PASSWORD '<served_log_db_password>';
#   CREATE DATABASE served_log OWNER servedlog;
mlops_mlflow_pw=$(cat "$MLFLOW_DB_PASSWORD_FILE") && mlops_registry_pw=$(cat "$REGISTRY_DB_PASSWORD_FILE") \
  && mlops_served_log_pw=$(cat "$SERVED_LOG_DB_PASSWORD_FILE") || exit 1
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v mlflow_password="$mlops_mlflow_pw" -v registry_password="$mlops_registry_pw" \
  -v served_log_password="$mlops_served_log_pw" <<'SQL' || exit 1
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;
CREATE DATABASE mlflow_auth OWNER mlflow;
CREATE ROLE registry LOGIN PASSWORD :'registry_password';
CREATE DATABASE registry OWNER registry;
CREATE ROLE servedlog LOGIN PASSWORD :'served_log_password';
CREATE DATABASE served_log OWNER servedlog;
SQL
unset mlops_mlflow_pw mlops_registry_pw mlops_served_log_pw
