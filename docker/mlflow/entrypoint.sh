#!/bin/sh
# MLflow tracking server and model registry with MLflow's basic-auth app: every request but /health needs a user,
# one MLflow user per service (provisioned here), the admin password comes from a secret.
#
# Variables this container reads. A secret NAME can also be given as NAME_FILE=/path (Docker's _FILE convention,
# trailing newlines dropped); a non-empty NAME wins over NAME_FILE.
#   MLFLOW_BACKEND_STORE_URI[_FILE]        required  tracking + registry store, postgresql://mlflow:PW@postgres:5432/mlflow
#   MLFLOW_AUTH_DATABASE_URI[_FILE]        required  basic-auth user store, e.g. postgresql://mlflow:PW@postgres:5432/mlflow_auth
#                                                    (a database of its own: see docker/README or the report; it MAY be the
#                                                    tracking database, MLflow's auth tables and alembic_version_auth don't clash)
#   MLFLOW_AUTH_ADMIN_PASSWORD[_FILE]      required  the admin's password, >= 12 characters; never MLflow's old default
#                                                    password1234 (MLflow refuses it). Changing the secret rotates it on restart.
#   MLFLOW_FLASK_SERVER_SECRET_KEY[_FILE]  required  the Flask/CSRF secret key of the auth app (same on every replica)
#   MLFLOW_AUTH_ADMIN_USERNAME             admin     the admin user's name
#   MLFLOW_SERVICE_USERS                   (none)    space-separated NAME=/path/to/password-file, e.g.
#       "registry-proxy=/run/secrets/mlops/mlflow_password_registry_proxy trainer=/run/secrets/mlops/mlflow_password_trainer
#        predictor=/run/secrets/mlops/mlflow_password_predictor" (each password >= 12 characters)
#   MLFLOW_REGISTRY_MANAGER                registry-proxy  gets MANAGE on every existing registered model
#   MLFLOW_EXPERIMENT_WRITER               trainer   gets EDIT on every existing experiment (created before auth)
#   MLFLOW_AUTH_CACHE_TTL_SECONDS          60        how long a worker caches a verified password (PBKDF2 is slow)
#   MLFLOW_PROVISION_ATTEMPTS              5         provisioning tries (10 s apart) before the container stays unhealthy
#   MLFLOW_HOST 0.0.0.0, MLFLOW_PORT 5000, MLFLOW_WORKERS 2, MLFLOW_SERVER_ALLOWED_HOSTS, MLFLOW_PROMETHEUS_DIR,
#   MLFLOW_ARTIFACTS_DESTINATION (read by mlflow itself). Extra arguments are passed on to `mlflow server`.
#
# Start-up: secrets resolved -> `mlflow db upgrade` (a newer image on an old volume) -> auth store migrated and the
# admin password set from the secret -> auth ini written to a private temp dir -> `mlflow server --app-name
# basic-auth` while, in the background, provision_users.py waits for /health, creates/updates the service users and
# then touches $MLFLOW_PROVISIONED_MARKER (default /var/lib/mlflow/run/provisioned), which the image's HEALTHCHECK
# requires besides /health. Nothing here prints a secret.
set -eu

die() { echo "mlflow-server: $*" >&2; exit 1; }

file_env() {  # file_env NAME: NAME when non-empty, else the content of the file NAME_FILE names; exported as NAME
  _name=$1
  eval "_value=\${$_name:-}"
  eval "_file=\${${_name}_FILE:-}"
  if [ -z "$_value" ] && [ -n "$_file" ]; then
    [ -r "$_file" ] || die "${_name}_FILE=$_file: cannot read the secret file"
    _value=$(cat "$_file")
  fi
  [ -n "$_value" ] || die "set $_name or ${_name}_FILE"
  export "$_name=$_value"
  unset "${_name}_FILE" _value _file
}

file_env MLFLOW_BACKEND_STORE_URI
file_env MLFLOW_AUTH_DATABASE_URI
file_env MLFLOW_AUTH_ADMIN_PASSWORD
file_env MLFLOW_FLASK_SERVER_SECRET_KEY
ADMIN_USERNAME=${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
AUTH_DATABASE_URI=$MLFLOW_AUTH_DATABASE_URI
ADMIN_PASSWORD=$MLFLOW_AUTH_ADMIN_PASSWORD
# MLflow's job runner (huey consumers for its GenAI jobs) is not used by this stack: off unless asked for.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}
# mlflow would let these variables override the ini (even when empty): the ini below is the one source.
unset MLFLOW_AUTH_DATABASE_URI MLFLOW_AUTH_ADMIN_PASSWORD MLFLOW_AUTH_ADMIN_USERNAME MLFLOW_TRACKING_USERNAME \
  MLFLOW_TRACKING_PASSWORD
[ "${#ADMIN_PASSWORD}" -ge 12 ] || die "the admin password is shorter than MLflow's minimum of 12 characters"
[ "$ADMIN_PASSWORD" != "password1234" ] || die "refusing MLflow's documented default admin password"
PROVISION=${MLFLOW_PROVISION_SCRIPT:-/usr/local/lib/mlflow/provision_users.py}
MARKER=${MLFLOW_PROVISIONED_MARKER:-/var/lib/mlflow/run/provisioned}
PORT=${MLFLOW_PORT:-5000}
rm -f "$MARKER"  # a restarted container keeps its filesystem: stay unhealthy until this start has provisioned

echo "mlflow-server: upgrading the tracking store schema"
mlflow db upgrade "$MLFLOW_BACKEND_STORE_URI"

echo "mlflow-server: migrating the auth store and setting the admin password from the secret"
MLFLOW_AUTH_DATABASE_URI=$AUTH_DATABASE_URI ADMIN_USERNAME=$ADMIN_USERNAME ADMIN_PASSWORD=$ADMIN_PASSWORD \
  python - <<'PY'
import os

from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

store = SqlAlchemyStore()
store.init_db(os.environ["MLFLOW_AUTH_DATABASE_URI"])  # runs the auth app's alembic migrations (alembic_version_auth)
name, password = os.environ["ADMIN_USERNAME"], os.environ["ADMIN_PASSWORD"]
if store.has_user(name, use_primary=True):
    if not store.authenticate_user(name, password, use_primary=True):
        store.update_user(name, password=password, is_admin=True)
        print(f"mlflow-server: the password of admin user {name!r} was changed to the one of the secret")
# else: `mlflow server` creates the admin with this password on its first start against the empty store.
PY

for _check in AUTH_DATABASE_URI ADMIN_USERNAME ADMIN_PASSWORD; do  # a newline would end an ini value
  eval "_value=\$$_check"
  case $_value in *"
"*) die "the ${_check} setting contains a newline" ;; esac
done
unset _check _value
ini_value() { printf '%s' "$1" | sed 's/%/%%/g'; }  # configparser interpolates %: write it %%

umask 077
AUTH_DIR=$(mktemp -d "${TMPDIR:-/tmp}/mlflow-auth.XXXXXX")
{
  echo "[mlflow]"
  echo "default_permission = READ"
  echo "database_uri = $(ini_value "$AUTH_DATABASE_URI")"
  echo "admin_username = $(ini_value "$ADMIN_USERNAME")"
  echo "admin_password = $(ini_value "$ADMIN_PASSWORD")"
  echo "auth_cache_ttl_seconds = ${MLFLOW_AUTH_CACHE_TTL_SECONDS:-60}"
} >"$AUTH_DIR/basic_auth.ini"
export MLFLOW_AUTH_CONFIG_PATH="$AUTH_DIR/basic_auth.ini"
umask 022

provision() {  # runs in the background: waits for /health, provisions, marks the container healthy
  set --
  names=" "
  for spec in ${MLFLOW_SERVICE_USERS:-}; do
    case $spec in
      ?*=?*) set -- "$@" --user "$spec"; names="$names${spec%%=*} " ;;
      *) echo "mlflow-server: MLFLOW_SERVICE_USERS: '$spec' is not NAME=/path/to/password-file" >&2; return 1 ;;
    esac
  done
  if [ $# -eq 0 ]; then
    echo "mlflow-server: MLFLOW_SERVICE_USERS is empty: no service users provisioned (only the admin can log in)" >&2
    touch "$MARKER"; return 0
  fi
  manager=${MLFLOW_REGISTRY_MANAGER-registry-proxy}
  writer=${MLFLOW_EXPERIMENT_WRITER-trainer}
  case $names in *" $manager "*) set -- "$@" --manager "$manager" ;; esac
  case $names in *" $writer "*) set -- "$@" --experiment-writer "$writer" ;; esac
  attempt=1
  while :; do
    if MLFLOW_TRACKING_USERNAME=$ADMIN_USERNAME MLFLOW_TRACKING_PASSWORD=$ADMIN_PASSWORD \
        python "$PROVISION" --tracking-uri "http://127.0.0.1:$PORT" --timeout 300 "$@"; then
      touch "$MARKER"; return 0
    fi
    [ "$attempt" -lt "${MLFLOW_PROVISION_ATTEMPTS:-5}" ] || break
    attempt=$((attempt + 1)); sleep 10
  done
  echo "mlflow-server: provisioning the service users failed; the container stays unhealthy" >&2
  return 1
}
mkdir -p "$(dirname "$MARKER")"

# MLflow 3.17 refuses, to every user but its admin, the routes it has no permission rule for ("fail closed"),
# among them its own /metrics, which Prometheus scrapes with its own read-only user. Off: a logged-in user may
# use such routes (MLflow's behaviour before 3.17); anonymous requests still get 401, and every registry and
# tracking route keeps its rule (tests/security/test_mlflow_side_doors.py).
export MLFLOW_BASIC_AUTH_FAIL_CLOSED="${MLFLOW_BASIC_AUTH_FAIL_CLOSED:-false}"

# The shell stays PID 1 (rather than exec): it reaps the provisioning job and hands SIGTERM/SIGINT on to mlflow.
mlflow server \
  --app-name basic-auth \
  --host "${MLFLOW_HOST:-0.0.0.0}" \
  --port "$PORT" \
  --workers "${MLFLOW_WORKERS:-2}" \
  --serve-artifacts \
  --allowed-hosts "${MLFLOW_SERVER_ALLOWED_HOSTS:-mlflow,mlflow:*,localhost,localhost:*,127.0.0.1,127.0.0.1:*}" \
  --expose-prometheus "${MLFLOW_PROMETHEUS_DIR:-/var/lib/mlflow/metrics}" \
  "$@" &
server=$!
provision &
provisioner=$!
trap 'kill -TERM "$server" 2>/dev/null || true' TERM INT HUP
while :; do
  if wait "$server"; then rc=0; else rc=$?; fi
  kill -0 "$server" 2>/dev/null || break  # wait was only interrupted by a signal: the server still runs
done
kill "$provisioner" 2>/dev/null || true
rm -f "$MARKER"
exit "$rc"
