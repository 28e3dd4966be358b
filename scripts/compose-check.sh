#!/usr/bin/env bash
# `make compose-check`: proves the Docker Compose stack, within a time budget.
#   1. always: validates the compose files (docker-compose config) with no env file at all, and with .env.example;
#   2. where a Docker engine is reachable or can be started: builds the local stand-in base images, then, from a
#      fresh copy of the working tree (tracked and new files, never .env) and with no env file and no secret in
#      the environment (secrets-init generates them), builds every image, brings the stack up, reads the admin
#      token from the running stack, checks that requests without a token are refused (401), runs the lifecycle
#      with the token (upload a small dataset, POST /retrain, job succeeded and promoted, POST /predict, the
#      predictor's served log in Postgres holds what it served),
#      restarts the stack (containers removed, volumes kept) and checks that the secrets (the same admin token),
#      the registered versions, the audit log and the served model survived, then tears everything down (down -v).
# It says plainly when it skips the engine part, and why. All test traffic goes to 127.0.0.1.
#
# Settings (environment):
#   COMPOSE_CHECK_ENGINE=auto|0|1  auto: run the engine part when an engine is reachable or starts (default);
#                                  0: validation only; 1: fail instead of skipping when no engine
#   COMPOSE_CHECK_START_ENGINE=1   install docker.io/docker-compose with apt-get and start dockerd when missing
#   COMPOSE_CHECK_ENGINE_WAIT=60   seconds to wait for a started dockerd
#   COMPOSE_CHECK_STOP_ENGINE=1    stop the dockerd this script started, at the end (0: leave it running)
#   COMPOSE_CHECK_BUDGET=1800      seconds for the whole engine part (teardown comes on top, at most 2 min)
#   COMPOSE_CHECK_NETWORK=bridge   bridge: the normal compose file, ports published on 127.0.0.1;
#                                  host: docker-compose.hostnet.yml (every container on the host's network)
#   COMPOSE_CHECK_WORKERS=2        trainer-worker replicas
#   COMPOSE_CHECK_DATA=upload      upload: train on a ~1,400-row sample uploaded with POST /datasets;
#                                  path: train on data/sms_spam.csv as shipped in the trainer image
#   COMPOSE_CHECK_KEEP=0           1: leave the stack running at the end (no teardown)
#   COMPOSE_CHECK_EXTRA_FILES=     more compose files (absolute paths, space-separated) added after the checked ones
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

PROJECT=${COMPOSE_CHECK_PROJECT:-mlops-compose-check}
NETWORK=${COMPOSE_CHECK_NETWORK:-bridge}
WORK=${COMPOSE_CHECK_DIR:-/tmp/mlops-compose-check}
SRC=$WORK/src  # the fresh copy the stack is built and run from
# Published ports of the checked stack: the DESIGN ports shifted by 10000, as in docker-compose.hostnet.yml.
PREDICTOR=http://127.0.0.1:18000 REGISTRY=http://127.0.0.1:18001 TRAINER=http://127.0.0.1:18002
MLFLOW=http://127.0.0.1:15000 PROMETHEUS=http://127.0.0.1:19090
MODEL=sms-spam

say() { printf '== %s\n' "$*"; }
fail() { printf 'compose-check: FAILED: %s\n' "$*" >&2; exit 1; }

apt_install() {  # apt_install PKG...: as root with apt-get, bounded; refreshes the package lists once if needed
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || return 1
  export DEBIAN_FRONTEND=noninteractive
  timeout 300 apt-get install -y -q "$@" >/dev/null 2>&1 && return 0
  timeout 180 apt-get update -q >/dev/null 2>&1 && timeout 300 apt-get install -y -q "$@" >/dev/null 2>&1
}

compose_cmd() {
  if command -v docker-compose >/dev/null 2>&1; then echo docker-compose
  elif docker compose version >/dev/null 2>&1; then echo "docker compose"
  fi
}

files() {
  case "$NETWORK" in
    bridge) echo -n "-f docker-compose.yml -f docker-compose.override.yml -f docker-compose.local.yml" ;;
    host) echo -n "-f docker-compose.yml -f docker-compose.local.yml -f docker-compose.hostnet.yml" ;;
    *) fail "COMPOSE_CHECK_NETWORK must be bridge or host, not '$NETWORK'" ;;
  esac
  local extra
  for extra in ${COMPOSE_CHECK_EXTRA_FILES:-}; do echo -n " -f $extra"; done
  echo
}

dc() {  # docker-compose on the checked project, in the fresh copy (no .env there)
  # shellcheck disable=SC2046
  (cd "$SRC" && $COMPOSE -p "$PROJECT" $(files) "$@")
}

# Every secret secrets-init would take from the environment instead of generating it (docker/secrets-init).
secret_vars() {
  python3 -c 'import ast, sys
tree = ast.parse(open(sys.argv[1]).read())
env = next(n.value for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "ENV")
print(" ".join(ast.literal_eval(env).values()))' docker/secrets-init/secrets_init.py
}

fresh_copy() {  # the working tree as a fresh clone would have it (plus new, not ignored files); never .env
  mkdir -p "$WORK" && chmod 700 "$WORK"
  rm -rf "$SRC" && mkdir -p "$SRC"
  git ls-files -z --cached --others --exclude-standard | tar --null -T - --ignore-failed-read -cf - 2>/dev/null \
    | tar -C "$SRC" -xf - || fail "could not copy the working tree to $SRC"
  rm -f "$SRC/.env"
}

# The settings of the check, as plain environment variables (no env file): shifted ports, a short poll.
check_settings() {
  local v
  for v in $(secret_vars); do unset "$v"; done
  unset COMPOSE_FILE COMPOSE_PROJECT_NAME
  export BIND_ADDRESS=127.0.0.1 PREDICTOR_PORT=18000 REGISTRY_PORT=18001 TRAINER_PORT=18002 MLFLOW_PORT=15000 \
    PROMETHEUS_PORT=19090 GRAFANA_PORT=13000 MLFLOW_WORKERS=1 POLL_INTERVAL_SECONDS=2 MODEL_NAME=$MODEL
}

# ---------------------------------------------------------------------------------------------------------------
validate() {
  say "validating the compose files"
  COMPOSE=$(compose_cmd)
  if [ -z "$COMPOSE" ] && [ "${COMPOSE_CHECK_START_ENGINE:-1}" = 1 ]; then
    say "installing docker-compose (apt-get)"
    apt_install docker-compose || true
    COMPOSE=$(compose_cmd)
  fi
  [ -n "$COMPOSE" ] || fail "neither docker-compose nor 'docker compose' is available to validate the compose files"
  local combo
  fresh_copy
  cp .env.example "$WORK/env.example"
  for combo in "docker-compose.yml" \
               "docker-compose.yml docker-compose.override.yml" \
               "docker-compose.yml docker-compose.override.yml docker-compose.local.yml" \
               "docker-compose.yml docker-compose.local.yml docker-compose.hostnet.yml"; do
    # shellcheck disable=SC2046
    (cd "$SRC" && $COMPOSE $(printf -- '-f %s ' $combo) config -q) || fail "compose config rejected (no env file): $combo"
    # shellcheck disable=SC2046
    (cd "$SRC" && $COMPOSE --env-file "$WORK/env.example" $(printf -- '-f %s ' $combo) config -q) \
      || fail "compose config rejected with .env.example: $combo"
    echo "  ok: $combo (no env file; .env.example)"
  done
}

engine_reachable() { timeout 10 docker info >/dev/null 2>&1; }

ensure_engine() {  # 0 when an engine is reachable; otherwise sets SKIP_REASON and returns 1
  SKIP_REASON=""
  if [ "${COMPOSE_CHECK_ENGINE:-auto}" = 0 ]; then SKIP_REASON="COMPOSE_CHECK_ENGINE=0"; return 1; fi
  command -v docker >/dev/null 2>&1 && engine_reachable && return 0
  if [ "${COMPOSE_CHECK_START_ENGINE:-1}" != 1 ]; then
    SKIP_REASON="no Docker engine reachable and COMPOSE_CHECK_START_ENGINE=0"; return 1
  fi
  if [ "$(id -u)" != 0 ]; then SKIP_REASON="no Docker engine reachable, and installing or starting one needs root"; return 1; fi
  if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
    if ! command -v apt-get >/dev/null; then SKIP_REASON="no Docker engine installed and no apt-get to install one"; return 1; fi
    say "installing docker.io (apt-get)"
    apt_install docker.io docker-compose || { SKIP_REASON="apt-get install docker.io failed"; return 1; }
  fi
  say "starting dockerd (log: $WORK/dockerd.log)"
  mkdir -p "$WORK"
  nohup dockerd >"$WORK/dockerd.log" 2>&1 </dev/null &
  STARTED_DOCKERD=$!
  local wait=${COMPOSE_CHECK_ENGINE_WAIT:-60} i
  for ((i = 0; i < wait; i++)); do
    engine_reachable && { echo "  dockerd (pid $STARTED_DOCKERD) answers after ${i}s"; return 0; }
    kill -0 "$STARTED_DOCKERD" 2>/dev/null || break
    sleep 1
  done
  tail -5 "$WORK/dockerd.log"
  SKIP_REASON="dockerd did not answer within ${wait}s (log above)"
  stop_engine
  return 1
}

stop_engine() {  # stops the dockerd this script started (COMPOSE_CHECK_STOP_ENGINE=0 leaves it running)
  [ -n "${STARTED_DOCKERD:-}" ] && [ "${COMPOSE_CHECK_STOP_ENGINE:-1}" = 1 ] || return 0
  say "stopping the dockerd this check started (pid $STARTED_DOCKERD)"
  kill -TERM "$STARTED_DOCKERD" 2>/dev/null || return 0
  local i
  for ((i = 0; i < 30; i++)); do kill -0 "$STARTED_DOCKERD" 2>/dev/null || return 0; sleep 1; done
}

# ---------------------------------------------------------------------------------------------------------------
# The engine part (run under `timeout` by main).
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {'d': d}))" "$1"; }
# Every request carries the admin's token (in production reads and predictions need a token too).
TOKEN=""
auth() { printf 'Authorization: Bearer %s' "$TOKEN"; }
get() { curl -fsS --max-time 30 -H "$(auth)" "$1"; }
status_of() {  # status_of METHOD URL [curl args...]: the HTTP status only
  local method=$1 url=$2; shift 2
  curl -s -o /dev/null -w '%{http_code}' --max-time 30 -X "$method" "$url" "$@"
}
admin_token() {  # the admin token, read from the running registry-proxy's secret file
  dc exec -T registry-proxy cat /run/secrets/mlops/registry_admin_token 2>/dev/null
}

wait_healthy() {  # every container of the project running and healthy (or without a healthcheck); secrets-init done
  local timeout=$1 start=$SECONDS states bad
  while true; do
    states=$(docker ps -a --filter "label=com.docker.compose.project=$PROJECT" --format '{{.Names}}|{{.Status}}')
    bad=$(echo "$states" | grep -v -E '\(healthy\)' | grep -v -E '^[^|]+\|Up [^()]*$' \
      | grep -v -E '^[^|]*secrets-init[^|]*\|Exited \(0\)' || true)
    if [ -z "$bad" ] && [ -n "$states" ]; then echo "$states" | sed 's/^/  /'; return 0; fi
    # A container that died fails at once; an unhealthy one may recover (slow checks on a busy machine).
    if echo "$bad" | grep -q -E 'Exited|Restarting'; then
      echo "$states" | sed 's/^/  /'; break
    fi
    ((SECONDS - start > timeout)) && { echo "$states" | sed 's/^/  /'; break; }
    sleep 3
  done
  dc logs --tail 40 >&2
  fail "the stack did not become healthy (a container exited, or ${timeout}s passed): see the states and logs above"
}

snapshot() {  # registered versions, audit log size and served model, as one line each
  get "$REGISTRY/models/$MODEL" | json "sorted((str(v['version']), sorted(v.get('aliases', []))) for v in d['versions'])"
  get "$REGISTRY/audit?model=$MODEL&limit=500" | json "(lambda items: 'audit entries: %d (%s)' % (len(items), ', '.join(sorted({str(i.get('action')) for i in items}))))(d['items'] if isinstance(d, dict) else d)"
  get "$PREDICTOR/model" | json "(d.get('model_name'), str(d.get('model_version')))"
}

predict() {
  curl -fsS --max-time 30 -X POST "$PREDICTOR/predict" -H "$(auth)" -H 'content-type: application/json' \
    -d '{"instances": ["WINNER!! Claim your free prize now, call 09061701461", "Are we still meeting for lunch tomorrow?"]}'
}

served_log_rows() {  # rows of $MODEL in the predictors' served log (database and table served_log); empty: no answer
  dc exec -T postgres psql -U postgres -d served_log -tAc "select count(*) from served_log where model_name = '$MODEL'" \
    2>/dev/null | tr -d '[:space:]'
}

redis_acl_check() {  # no container's log shows a Redis refusal (ACL denial, wrong or missing password)
  local denied
  denied=$(dc logs --no-color 2>/dev/null | grep -E 'NOPERM|NoPermissionError|WRONGPASS|NOAUTH' | head -5)
  [ -z "$denied" ] || { echo "$denied" >&2; fail "a service was refused by Redis (docker/redis/users.acl.template) $1"; }
  echo "  no service was refused by Redis $1"
}

engine_part() {
  local t0=$SECONDS t
  say "building the local stand-in base images (kept when present)"
  if ! docker image inspect mlops/debian:bookworm >/dev/null 2>&1 && ! command -v debootstrap >/dev/null; then
    say "installing debootstrap (apt-get)"
    apt_install debootstrap || fail "debootstrap is needed to build the base images and could not be installed"
  fi
  bash docker/build-base-images.sh | grep -v -E '^(REPOSITORY|mlops/)' || fail "building the base images failed"
  say "building the stack's images (from a fresh copy in $SRC; no .env, no env file, no secret in the environment)"
  [ ! -e "$SRC/.env" ] || fail "$SRC/.env exists"
  dc down -v --remove-orphans >/dev/null 2>&1 || true  # leftovers of an earlier run (COMPOSE_CHECK_KEEP=1)
  t=$SECONDS
  dc build >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log" >&2; fail "docker-compose build failed (log: $WORK/build.log)"; }
  grep -E '^(Building|Successfully tagged)' "$WORK/build.log" | sed 's/^/  /'
  echo "  built in $((SECONDS - t))s"

  say "starting the stack ($NETWORK networking, ${COMPOSE_CHECK_WORKERS:-2} trainer workers; Grafana has no local stand-in)"
  t=$SECONDS
  dc up -d --scale trainer-worker="${COMPOSE_CHECK_WORKERS:-2}" 2>&1 | grep -v -E '^\s*$' | tail -20
  wait_healthy 420
  echo "  healthy in $((SECONDS - t))s"
  curl -fsS --max-time 30 "$PROMETHEUS/api/v1/targets" | json "'  prometheus targets up: ' + ', '.join(sorted(t['labels']['job'] for t in d['data']['activeTargets'] if t['health'] == 'up')) + '; not up: ' + (', '.join(sorted('%s (%s)' % (t['labels']['job'], t['lastError'] or t['health']) for t in d['data']['activeTargets'] if t['health'] != 'up')) or 'none')" || true
  local nodes
  nodes=$(dc exec -T trainer-api celery -A trainer.celery_app inspect ping --timeout 10 2>/dev/null | grep -c -E 'pong' || true)
  echo "  celery workers answering ping: $nodes"
  [ "$nodes" -ge "${COMPOSE_CHECK_WORKERS:-2}" ] || fail "expected ${COMPOSE_CHECK_WORKERS:-2} workers to answer, got $nodes"

  say "secrets: generated by secrets-init, the admin token read from the running stack"
  dc logs --no-color secrets-init 2>/dev/null | grep -c ' generated$' | sed 's/^/  secrets generated on the first start: /'
  TOKEN=$(admin_token) && [ "${#TOKEN}" -ge 32 ] || fail "could not read the admin token from registry-proxy"
  echo "  admin token: ${#TOKEN} characters"
  local code body
  body='{"model_name": "'$MODEL'"}'
  code=$(status_of POST "$TRAINER/retrain" -H 'content-type: application/json' -d "$body")
  echo "  POST /retrain without a token → $code"
  [ "$code" = 401 ] || fail "POST /retrain without a token answered $code, not 401"
  code=$(status_of POST "$TRAINER/retrain" -H 'content-type: application/json' -H 'Authorization: Bearer not-a-token' -d "$body")
  echo "  POST /retrain with a wrong token → $code"
  [ "$code" = 401 ] || fail "POST /retrain with a wrong token answered $code, not 401"
  code=$(status_of GET "$REGISTRY/models/$MODEL")
  echo "  GET registry /models/$MODEL without a token → $code"
  [ "$code" = 401 ] || fail "a registry read without a token answered $code, not 401 (ENVIRONMENT=production)"
  code=$(status_of POST "$PREDICTOR/predict" -H 'content-type: application/json' -d '{"instances": ["hi"]}')
  echo "  POST /predict without a token → $code"
  [ "$code" = 401 ] || fail "POST /predict without a token answered $code, not 401 (ENVIRONMENT=production)"
  redis_acl_check "while starting"

  say "lifecycle: a small dataset, retrain, promote, predict"
  local dataset job_id job status decision version
  if [ "${COMPOSE_CHECK_DATA:-upload}" = upload ]; then
    python3 - "$ROOT/data/sms_spam.csv" "$WORK/sms_subset.csv" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1], newline="", encoding="utf-8")))
header, body = rows[0], rows[1:]
with open(sys.argv[2], "w", newline="", encoding="utf-8") as out:
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(row for i, row in enumerate(body) if i % 2 == 0)  # every 2nd row: ~2,800, same class mix
PY
    dataset=$(curl -fsS --max-time 60 -H "$(auth)" -F "file=@$WORK/sms_subset.csv" "$TRAINER/datasets" | json "d['dataset_id']") \
      || fail "POST /datasets failed"
    echo "  uploaded dataset $dataset"
  else
    dataset=data/sms_spam.csv
    echo "  dataset $dataset (in the image)"
  fi
  job_id=$(curl -fsS --max-time 30 -X POST "$TRAINER/retrain" -H "$(auth)" -H 'content-type: application/json' -d @- <<EOF | json "d['job_id']"
{"model_name": "$MODEL", "idempotency_key": "compose-check-$(date +%s)",
 "spec": {"data": {"uri": "$dataset", "text_column": "text", "label_column": "label"},
          "metric": {"name": "f1_macro", "higher_is_better": true, "threshold": 0.7},
          "candidates": [{"featurizer": {"type": "tfidf", "params": {"ngram_range": [1, 2], "min_df": 2}},
                          "estimator": {"type": "logreg", "params": {"max_iter": 1000, "C": 10.0}}},
                         {"featurizer": {"type": "bow"}, "estimator": {"type": "knn", "params": {"n_neighbors": 3}}}]}}
EOF
  ) || fail "POST /retrain failed"
  echo "  job $job_id"
  t=$SECONDS
  while true; do
    job=$(get "$TRAINER/jobs/$job_id") || fail "GET /jobs/$job_id failed"
    status=$(echo "$job" | json "d['status']")
    case "$status" in succeeded | failed) break ;; esac
    ((SECONDS - t > 600)) && fail "job $job_id still $status after 600s"
    sleep 3
  done
  decision=$(echo "$job" | json "d.get('decision')") version=$(echo "$job" | json "d.get('model_version')")
  echo "  job $status in $((SECONDS - t))s: decision=$decision version=$version"
  [ "$status" = succeeded ] && [ "$decision" = promoted ] || { echo "$job" >&2; dc logs --tail 60 trainer-worker >&2; fail "the retrain did not succeed with a promotion"; }
  t=$SECONDS
  until [ "$(get "$PREDICTOR/model" 2>/dev/null | json "str(d.get('model_version'))" 2>/dev/null)" = "$version" ]; do
    ((SECONDS - t > 120)) && { dc logs --tail 40 predictor >&2; fail "the predictor did not serve version $version within 120s"; }
    sleep 1
  done
  echo "  predictor serves version $version after $((SECONDS - t))s"
  local answer
  answer=$(predict) || fail "POST /predict failed"
  echo "  POST /predict → $answer"
  [ "$(echo "$answer" | json "d['predictions']")" = "['spam', 'ham']" ] || fail "unexpected predictions: $answer"
  # The predictor writes its served log in the background (every SERVED_LOG_FLUSH_SECONDS): one row per instance.
  local rows
  t=$SECONDS
  until rows=$(served_log_rows) && [ "${rows:-0}" -ge 2 ] 2>/dev/null; do
    ((SECONDS - t > 30)) && { dc logs --tail 40 predictor >&2; fail "the served log (Postgres database served_log) holds ${rows:-no} rows of $MODEL 30s after POST /predict, not the 2 instances served"; }
    sleep 1
  done
  echo "  served log: $rows rows of $MODEL in Postgres (database and table served_log) after $((SECONDS - t))s"

  redis_acl_check "after the lifecycle"

  say "restarting the stack (containers removed, named volumes kept)"
  local before after token_before=$TOKEN
  before=$(snapshot) || fail "could not read the state before the restart"
  echo "$before" | sed 's/^/  before: /'
  t=$SECONDS
  dc down 2>&1 | tail -1
  echo "  down in $((SECONDS - t))s"
  dc up -d --scale trainer-worker="${COMPOSE_CHECK_WORKERS:-2}" 2>&1 | tail -1
  wait_healthy 420 >/dev/null
  echo "  healthy again $((SECONDS - t))s after the restart began"
  TOKEN=$(admin_token) || fail "could not read the admin token after the restart"
  [ "$TOKEN" = "$token_before" ] || fail "the admin token changed across down/up: the secrets did not survive"
  ! dc logs --no-color secrets-init 2>/dev/null | grep -q ' generated$' || fail "secrets-init generated secrets again"
  echo "  secrets survived: the same admin token, nothing generated again"
  until [ "$(get "$PREDICTOR/model" 2>/dev/null | json "str(d.get('model_version'))" 2>/dev/null)" = "$version" ]; do
    ((SECONDS - t > 540)) && fail "after the restart the predictor does not serve version $version"
    sleep 1
  done
  echo "  predictor serves version $version again $((SECONDS - t))s after the restart began"
  after=$(snapshot) || fail "could not read the state after the restart"
  echo "$after" | sed 's/^/  after:  /'
  [ "$before" = "$after" ] || fail "state changed across the restart"
  answer=$(predict) || fail "POST /predict failed after the restart"
  echo "  POST /predict → $answer"
  job=$(get "$TRAINER/jobs/$job_id" | json "d['status']") || fail "the job record did not survive the restart"
  echo "  job $job_id still recorded: $job"
  if [ "${COMPOSE_CHECK_DATA:-upload}" = upload ]; then
    get "$TRAINER/datasets/$dataset" >/dev/null || fail "the uploaded dataset did not survive the restart"
    echo "  dataset $dataset still there"
  fi
  say "engine part passed in $((SECONDS - t0))s"
}

teardown() {
  if [ "${COMPOSE_CHECK_KEEP:-0}" = 1 ]; then say "COMPOSE_CHECK_KEEP=1: the stack stays up (project $PROJECT)"; return; fi
  say "tearing down (docker-compose down -v)"
  # shellcheck disable=SC2046
  (cd "$SRC" && timeout 120 $COMPOSE -p "$PROJECT" $(files) down -v --remove-orphans 2>&1 | tail -3)
  # Superseded builds of the stack's images (untagged, labelled by our Dockerfiles); tagged images stay as cache.
  timeout 60 docker image prune -f --filter label=org.opencontainers.image.vendor=mlops-stack 2>&1 | tail -1
}

# ---------------------------------------------------------------------------------------------------------------
main() {
  local start=$SECONDS rc
  validate
  if ! ensure_engine; then
    if [ "${COMPOSE_CHECK_ENGINE:-auto}" = 1 ]; then fail "no Docker engine: $SKIP_REASON"; fi
    echo "compose-check: engine part SKIPPED: $SKIP_REASON; only the compose files were validated"
    return 0
  fi
  check_settings
  export COMPOSE PROJECT NETWORK WORK SRC
  timeout -k 10 "${COMPOSE_CHECK_BUDGET:-1800}" "$0" --engine-part
  rc=$?
  [ "$rc" = 124 ] && echo "compose-check: FAILED: the engine part ran out of its ${COMPOSE_CHECK_BUDGET:-1800}s budget" >&2
  teardown
  stop_engine
  say "compose-check $([ "$rc" = 0 ] && echo passed || echo FAILED) in $((SECONDS - start))s"
  return "$rc"
}

# One compound command that exits: bash never reads past it, even if the file changes while it runs.
if [ "${1:-}" = --engine-part ]; then
  engine_part
  exit $?
else
  main
  exit $?
fi
