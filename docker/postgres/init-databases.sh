#!/bin/bash
# Runs once, on the first start of an empty Postgres volume (official postgres image and the local stand-in
# alike): creates the `mlflow` database and MLflow's authentication database `mlflow_auth`, owned by the
# login role `mlflow`; the `registry` database, owned by the login role `registry`; and the predictors' served
# log `served_log` (what they served, read back by the trainer for production datasets), owned by `servedlog`.
# The roles' passwords are read from files (MLFLOW_DB_PASSWORD_FILE, REGISTRY_DB_PASSWORD_FILE,
# SERVED_LOG_DB_PASSWORD_FILE: written by secrets-init) or, without a file, from MLFLOW_DB_PASSWORD /
# REGISTRY_DB_PASSWORD / SERVED_LOG_DB_PASSWORD.
# A volume initialised before `served_log` existed never runs this again: create it there by hand, with the
# password secrets-init keeps (`docker compose run --rm --no-deps secrets-init --print
# postgres_served_log_password`), in `docker compose exec postgres psql -U postgres`:
#   CREATE ROLE servedlog LOGIN PASSWORD '<that password>';
#   CREATE DATABASE served_log OWNER servedlog;
# Until then the predictors serve as usual and count their served-log rows as dropped.
# Sourced by the entrypoint (not run), so it keeps to its own variables and sets no shell options.
mlops_init_secret() {  # mlops_init_secret NAME: the value of NAME_FILE's file, else of NAME; fails if neither
  local name=$1 file_var="${1}_FILE"
  if [ -n "${!file_var:-}" ]; then
    [ -r "${!file_var}" ] || { echo "init-databases: cannot read $file_var=${!file_var}" >&2; return 1; }
    cat "${!file_var}"
  elif [ -n "${!name:-}" ]; then
    printf '%s' "${!name}"
  else
    echo "init-databases: set $file_var or $name" >&2
    return 1
  fi
}
mlops_mlflow_pw=$(mlops_init_secret MLFLOW_DB_PASSWORD) || exit 1
mlops_registry_pw=$(mlops_init_secret REGISTRY_DB_PASSWORD) || exit 1
mlops_served_log_pw=$(mlops_init_secret SERVED_LOG_DB_PASSWORD) || exit 1
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
echo "created databases mlflow, mlflow_auth, registry and served_log"
