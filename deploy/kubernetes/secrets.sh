#!/usr/bin/env bash
# Creates (or updates) the stack's Secrets in a namespace, the same files secrets-init writes for compose:
# one Secret mlops-<service> per service (postgres, redis, mlflow, registry-proxy, trainer, predictor,
# prometheus, grafana), mounted read-only at /run/secrets/mlops and named in the *_FILE variables.
#
#   deploy/kubernetes/secrets.sh NAMESPACE
#
# It runs docker/secrets-init/secrets_init.py (Python standard library only) on this machine: each secret is
# generated at random the first time and kept in $MLOPS_SECRETS_STORE (default
# ~/.local/state/mlops-stack/<namespace>, mode 0700; keep it safe, or keep it nowhere and set every value),
# or taken from the environment variable that names it (POSTGRES_PASSWORD, MLFLOW_DB_PASSWORD, ...: the
# list is in .env.example). POSTGRES_ADDRESS and REDIS_ADDRESS (default postgres:5432 and redis:6379, the
# in-cluster servers of overlays/dev) go into the URLs: set them to the external servers for overlays/prod.
# Nothing is written into the repository, and no secret is printed.
set -euo pipefail
NAMESPACE=${1:?usage: deploy/kubernetes/secrets.sh NAMESPACE}
HERE=$(cd "$(dirname "$0")" && pwd)
STORE=${MLOPS_SECRETS_STORE:-${XDG_STATE_HOME:-$HOME/.local/state}/mlops-stack/$NAMESPACE}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
mkdir -p "$STORE" && chmod 700 "$STORE"
services=$(python3 -c 'import importlib.util, sys
spec = importlib.util.spec_from_file_location("s", sys.argv[1]); m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m); print(" ".join(m.VOLUMES))' "$HERE/../../docker/secrets-init/secrets_init.py")
for service in $services; do mkdir -p "$OUT/$service"; done
SECRETS_STORE=$STORE SECRETS_OUT=$OUT python3 "$HERE/../../docker/secrets-init/secrets_init.py"
kubectl get namespace "$NAMESPACE" >/dev/null 2>&1 || kubectl create namespace "$NAMESPACE"
for service in $services; do
  kubectl create secret generic "mlops-$service" --namespace "$NAMESPACE" --from-file="$OUT/$service" \
    --dry-run=client -o yaml | kubectl apply -f -
done
# For components/keda: Redis' `trainer` user, which may read the queue's length.
kubectl create secret generic mlops-keda-redis --namespace "$NAMESPACE" \
  --from-literal=address="${REDIS_ADDRESS:-redis:6379}" --from-literal=username=trainer \
  --from-file=password="$STORE/redis_password_trainer" --dry-run=client -o yaml | kubectl apply -f -
