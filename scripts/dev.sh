#!/usr/bin/env bash
# `make dev` / `make dev-down`: the whole stack as local processes (no Docker), on the DESIGN ports.
# Logs and pids live in .dev/. Every URL and port can be overridden from the environment or .env.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEV=$ROOT/.dev
BIN=$ROOT/.venv/bin
mkdir -p "$DEV/logs" "$DEV/pids" "$DEV/artifacts" "$DEV/mlflow-metrics" "$DEV/datasets"

if [ -f .env ]; then set -a; . ./.env; set +a; fi
export ENVIRONMENT=${ENVIRONMENT:-local}
export POSTGRES_URL=${POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432}
export MLFLOW_PORT=${MLFLOW_PORT:-5000} PREDICTOR_PORT=${PREDICTOR_PORT:-8000}
export REGISTRY_PORT=${REGISTRY_PORT:-8001} TRAINER_PORT=${TRAINER_PORT:-8002} PROMETHEUS_PORT=${PROMETHEUS_PORT:-9090}
export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-http://127.0.0.1:$MLFLOW_PORT}
export MLFLOW_BACKEND_STORE_URI=${MLFLOW_BACKEND_STORE_URI:-$POSTGRES_URL/mlflow}
export REGISTRY_DATABASE_URL=${REGISTRY_DATABASE_URL:-$POSTGRES_URL/registry}
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
export CELERY_BROKER_URL=${CELERY_BROKER_URL:-$REDIS_URL}
export REGISTRY_URL=${REGISTRY_URL:-http://127.0.0.1:$REGISTRY_PORT}
export MODEL_NAME=${MODEL_NAME:-sms-spam}
export DATASETS_DIR=${DATASETS_DIR:-$DEV/datasets}
export PATH=$BIN:$PATH
# DEV_MLFLOW_AUTH=1: MLflow runs its basic-auth app through docker/mlflow/entrypoint.sh (as in the image), with the
# admin and per-service passwords generated once into .dev/secrets/ (mode 600, kept across restarts) and each
# service's MLFLOW_TRACKING_USERNAME/PASSWORD exported to that service's processes only. Off by default for now:
# the trainer still registers models in MLflow itself, which its MLflow user may not do; turn it on by default once
# model registration has moved into registry-proxy.
DEV_MLFLOW_AUTH=${DEV_MLFLOW_AUTH:-0}
SECRETS=$DEV/secrets
if [ "$DEV_MLFLOW_AUTH" = 1 ]; then
  unset MLFLOW_TRACKING_USERNAME MLFLOW_TRACKING_PASSWORD  # never one identity for every process
fi

start() {  # start NAME CMD... : background process with a pid file and a log
  local name=$1; shift
  if [ -f "$DEV/pids/$name" ] && kill -0 "$(cat "$DEV/pids/$name")" 2>/dev/null; then
    echo "  $name already running"; return
  fi
  setsid "$@" >"$DEV/logs/$name.log" 2>&1 &
  echo $! >"$DEV/pids/$name"
}

mlflow_secrets() {  # generates the MLflow admin/service passwords and the Flask key once, mode 600
  mkdir -p "$SECRETS" && chmod 700 "$SECRETS"
  local name
  for name in mlflow_admin_password mlflow_flask_secret_key mlflow_password_registry_proxy mlflow_password_trainer \
      mlflow_password_predictor; do
    if [ ! -s "$SECRETS/$name" ]; then
      (umask 077 && "$BIN/python" -c "import secrets; print(secrets.token_urlsafe(32))" >"$SECRETS/$name")
      echo "  generated .dev/secrets/$name"
    fi
    chmod 600 "$SECRETS/$name"
  done
}

as_mlflow_user() {  # as_mlflow_user USER NAME CMD...: `start NAME CMD...` with USER's MLflow credentials in its env only
  local user=$1; shift
  if [ "$DEV_MLFLOW_AUTH" = 1 ]; then
    (
      export MLFLOW_TRACKING_USERNAME=$user
      MLFLOW_TRACKING_PASSWORD=$(cat "$SECRETS/mlflow_password_${user//-/_}")
      export MLFLOW_TRACKING_PASSWORD
      start "$@"
    )
  else
    start "$@"
  fi
}

start_mlflow() {
  # MLflow's job runner (huey consumers for its GenAI jobs) is not used by this stack, as in the image.
  export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}
  if [ "$DEV_MLFLOW_AUTH" != 1 ]; then
    start mlflow mlflow server --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" --serve-artifacts \
      --artifacts-destination "$DEV/artifacts" --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1 \
      --expose-prometheus "$DEV/mlflow-metrics"
    return
  fi
  "$BIN/python" -c "import flask_wtf" 2>/dev/null \
    || { echo "MLflow's basic-auth app needs Flask-WTF: $BIN/pip install 'mlflow[auth]'"; exit 1; }
  mlflow_secrets
  # Everything below reaches the MLflow process only (the subshell keeps it from the services).
  (
    export MLFLOW_AUTH_DATABASE_URI=${MLFLOW_AUTH_DATABASE_URI:-$POSTGRES_URL/mlflow_auth}
    export MLFLOW_AUTH_ADMIN_PASSWORD_FILE=$SECRETS/mlflow_admin_password
    export MLFLOW_FLASK_SERVER_SECRET_KEY_FILE=$SECRETS/mlflow_flask_secret_key
    export MLFLOW_SERVICE_USERS="registry-proxy=$SECRETS/mlflow_password_registry_proxy
      trainer=$SECRETS/mlflow_password_trainer predictor=$SECRETS/mlflow_password_predictor"
    export MLFLOW_PROVISION_SCRIPT=$ROOT/docker/mlflow/provision_users.py
    export MLFLOW_PROVISIONED_MARKER=$DEV/mlflow-provisioned
    export MLFLOW_ARTIFACTS_DESTINATION=$DEV/artifacts MLFLOW_PROMETHEUS_DIR=$DEV/mlflow-metrics
    export MLFLOW_HOST=127.0.0.1 MLFLOW_WORKERS=1
    start mlflow sh "$ROOT/docker/mlflow/entrypoint.sh"
  )
}

wait_provisioned() {  # the service users exist once entrypoint.sh's provisioning has touched its marker
  [ "$DEV_MLFLOW_AUTH" = 1 ] || return 0
  for _ in $(seq 1 360); do
    if [ -f "$DEV/mlflow-provisioned" ]; then echo "  mlflow users provisioned (passwords in .dev/secrets/)"; return; fi
    if ! kill -0 "$(cat "$DEV/pids/mlflow")" 2>/dev/null; then
      echo "  mlflow exited; last lines of .dev/logs/mlflow.log:"; tail -20 "$DEV/logs/mlflow.log"; exit 1
    fi
    sleep 0.5
  done
  echo "  mlflow's service users were not provisioned within 180 s (see .dev/logs/mlflow.log)"; exit 1
}

wait_http() {  # wait_http NAME URL [SECONDS, default 90]
  local seconds=${3:-90}
  for _ in $(seq 1 $((seconds * 2))); do
    if curl -fsS -o /dev/null "$2" 2>/dev/null; then echo "  $1 up: ${2%/*}"; return; fi
    if ! kill -0 "$(cat "$DEV/pids/$1")" 2>/dev/null; then
      echo "  $1 exited; last lines of .dev/logs/$1.log:"; tail -20 "$DEV/logs/$1.log"; exit 1
    fi
    sleep 0.5
  done
  echo "  $1 did not answer $2 within $seconds s (see .dev/logs/$1.log)"; exit 1
}

up() {
  echo "== checking Postgres and Redis"
  if ! "$BIN/python" -c "import psycopg2,sys; psycopg2.connect(sys.argv[1]+'/postgres').close()" "$POSTGRES_URL" 2>/dev/null; then
    echo "cannot reach Postgres at $POSTGRES_URL (set POSTGRES_URL, or start it:"
    echo "  pg_ctlcluster --skip-systemctl-redirect \$(ls /etc/postgresql) main start)"; exit 1
  fi
  if ! "$BIN/python" -c "import redis,sys; redis.Redis.from_url(sys.argv[1]).ping()" "$REDIS_URL" 2>/dev/null; then
    echo "cannot reach Redis at $REDIS_URL (set REDIS_URL, or start it:"
    echo "  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\")"; exit 1
  fi
  "$BIN/python" - "$POSTGRES_URL" "$DEV_MLFLOW_AUTH" <<'PY'
import sys, psycopg2
conn = psycopg2.connect(sys.argv[1] + "/postgres"); conn.autocommit = True
with conn.cursor() as cur:
    for db in ("mlflow", "registry") + (("mlflow_auth",) if sys.argv[2] == "1" else ()):
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
        if not cur.fetchone():
            cur.execute(f'CREATE DATABASE "{db}"'); print(f"  created database {db}")
PY
  echo "== starting the stack (logs in .dev/logs)"
  start_mlflow
  # With auth, the entrypoint first upgrades both stores' schemas: allow it longer.
  wait_http mlflow "$MLFLOW_TRACKING_URI/health" "$([ "$DEV_MLFLOW_AUTH" = 1 ] && echo 300 || echo 90)"
  wait_provisioned
  as_mlflow_user registry-proxy registry-proxy uvicorn registry_proxy.main:app --host 127.0.0.1 --port "$REGISTRY_PORT"
  wait_http registry-proxy "$REGISTRY_URL/health"
  as_mlflow_user trainer trainer-api uvicorn trainer.api:app --host 127.0.0.1 --port "$TRAINER_PORT"
  as_mlflow_user trainer trainer-worker celery -A trainer.celery_app worker --loglevel INFO --concurrency 1 \
    --hostname "worker1@%h"
  as_mlflow_user trainer trainer-beat celery -A trainer.celery_app beat --loglevel INFO \
    --schedule "$DEV/celerybeat-schedule"
  wait_http trainer-api "http://127.0.0.1:$TRAINER_PORT/health"
  as_mlflow_user predictor predictor uvicorn predictor.main:app --host 127.0.0.1 --port "$PREDICTOR_PORT" \
    --loop uvloop --http httptools
  wait_http predictor "http://127.0.0.1:$PREDICTOR_PORT/health"
  if command -v prometheus >/dev/null && [ -f infra/prometheus/prometheus.dev.yml ]; then
    start prometheus prometheus --config.file=infra/prometheus/prometheus.dev.yml \
      --storage.tsdb.path="$DEV/prometheus" --web.listen-address="127.0.0.1:$PROMETHEUS_PORT"
    wait_http prometheus "http://127.0.0.1:$PROMETHEUS_PORT/-/ready"
  else
    echo "  prometheus not started (install Debian's 'prometheus' package to get it)"
  fi
  # Alertmanager with infra/alertmanager/alertmanager.yml, its receivers pointed at this machine: trainer-api on
  # 127.0.0.1 with the trainer-api token (from .dev/secrets, mode 600), the operators at OPERATOR_ALERT_WEBHOOK_URL.
  if command -v prometheus-alertmanager >/dev/null; then
    mkdir -p "$SECRETS" && chmod 700 "$SECRETS"
    (umask 077 && printf '%s' "${TRAINER_API_TOKEN:-changethis}" >"$SECRETS/trainer_api_token")
    sed -e "s|http://trainer-api:8002|http://127.0.0.1:$TRAINER_PORT|" \
        -e "s|/run/secrets/mlops/trainer_api_token|$SECRETS/trainer_api_token|" \
        -e "s|http://operators-webhook.invalid/set-OPERATOR_ALERT_WEBHOOK_URL|${OPERATOR_ALERT_WEBHOOK_URL:-http://operators-webhook.invalid/set-OPERATOR_ALERT_WEBHOOK_URL}|" \
        infra/alertmanager/alertmanager.yml >"$DEV/alertmanager.yml"
    start alertmanager prometheus-alertmanager --config.file="$DEV/alertmanager.yml" \
      --storage.path="$DEV/alertmanager" --web.listen-address="127.0.0.1:${ALERTMANAGER_PORT:-9093}" \
      --cluster.listen-address=
    wait_http alertmanager "http://127.0.0.1:${ALERTMANAGER_PORT:-9093}/-/ready"
  else
    echo "  alertmanager not started (install Debian's 'prometheus-alertmanager' package to get it)"
  fi
  cat <<MSG
== ready
  predictor       http://127.0.0.1:$PREDICTOR_PORT/docs
  registry-proxy  http://127.0.0.1:$REGISTRY_PORT/ui
  trainer-api     http://127.0.0.1:$TRAINER_PORT/docs
  mlflow          $MLFLOW_TRACKING_URI
Train the first model:  curl -X POST localhost:$TRAINER_PORT/retrain -H 'content-type: application/json' -d '{"model_name": "$MODEL_NAME"}'
Stop everything:        make dev-down
MSG
}

down() {
  shopt -s nullglob
  for pidfile in "$DEV"/pids/*; do
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
      echo "  stopped $(basename "$pidfile")"
    fi
    rm -f "$pidfile"
  done
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down"; exit 2 ;;
esac
