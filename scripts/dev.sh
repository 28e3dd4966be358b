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
export PYTHONPATH=$ROOT/services/common:$ROOT/services/trainer:$ROOT/services/registry-proxy:$ROOT/services/predictor
export PATH=$BIN:$PATH

start() {  # start NAME CMD... : background process with a pid file and a log
  local name=$1; shift
  if [ -f "$DEV/pids/$name" ] && kill -0 "$(cat "$DEV/pids/$name")" 2>/dev/null; then
    echo "  $name already running"; return
  fi
  setsid "$@" >"$DEV/logs/$name.log" 2>&1 &
  echo $! >"$DEV/pids/$name"
}

wait_http() {  # wait_http NAME URL
  for _ in $(seq 1 180); do
    if curl -fsS -o /dev/null "$2" 2>/dev/null; then echo "  $1 up: ${2%/*}"; return; fi
    if ! kill -0 "$(cat "$DEV/pids/$1")" 2>/dev/null; then
      echo "  $1 exited; last lines of .dev/logs/$1.log:"; tail -20 "$DEV/logs/$1.log"; exit 1
    fi
    sleep 0.5
  done
  echo "  $1 did not answer $2 within 90 s (see .dev/logs/$1.log)"; exit 1
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
  "$BIN/python" - "$POSTGRES_URL" <<'PY'
import sys, psycopg2
conn = psycopg2.connect(sys.argv[1] + "/postgres"); conn.autocommit = True
with conn.cursor() as cur:
    for db in ("mlflow", "registry"):
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
        if not cur.fetchone():
            cur.execute(f'CREATE DATABASE "{db}"'); print(f"  created database {db}")
PY
  echo "== starting the stack (logs in .dev/logs)"
  start mlflow mlflow server --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" --serve-artifacts \
    --artifacts-destination "$DEV/artifacts" --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1 \
    --expose-prometheus "$DEV/mlflow-metrics"
  wait_http mlflow "$MLFLOW_TRACKING_URI/health"
  start registry-proxy uvicorn registry_proxy.main:app --host 127.0.0.1 --port "$REGISTRY_PORT"
  wait_http registry-proxy "$REGISTRY_URL/health"
  start trainer-api uvicorn trainer.api:app --host 127.0.0.1 --port "$TRAINER_PORT"
  start trainer-worker celery -A trainer.celery_app worker --loglevel INFO --concurrency 1 --hostname "worker1@%h"
  start trainer-beat celery -A trainer.celery_app beat --loglevel INFO --schedule "$DEV/celerybeat-schedule"
  wait_http trainer-api "http://127.0.0.1:$TRAINER_PORT/health"
  start predictor uvicorn predictor.main:app --host 127.0.0.1 --port "$PREDICTOR_PORT" --loop uvloop --http httptools
  wait_http predictor "http://127.0.0.1:$PREDICTOR_PORT/health"
  if command -v prometheus >/dev/null && [ -f infra/prometheus/prometheus.dev.yml ]; then
    start prometheus prometheus --config.file=infra/prometheus/prometheus.dev.yml \
      --storage.tsdb.path="$DEV/prometheus" --web.listen-address="127.0.0.1:$PROMETHEUS_PORT"
    wait_http prometheus "http://127.0.0.1:$PROMETHEUS_PORT/-/ready"
  else
    echo "  prometheus not started (install Debian's 'prometheus' package to get it)"
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
