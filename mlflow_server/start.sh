#!/usr/bin/env bash
# Start the deeppert MLflow tracking server in the foreground (Ctrl-C stops it cleanly).
#
#   mlflow_server/start.sh                       # SQLite file mlruns/mlflow.db, port 5000
#   DEEPPERT_BACKEND_STORE_URI=postgresql://postgres@127.0.0.1:5432/deeppert mlflow_server/start.sh
#   DEEPPERT_SERVER_AUTH=1 mlflow_server/start.sh   # needs MLFLOW_AUTH_ADMIN_PASSWORD and
#                                                   # MLFLOW_FLASK_SERVER_SECRET_KEY (12+ chars)
# Extra arguments are passed to `deeppert server` (e.g. --port 5001 --workers 2, or with auth
# --auth-cache-ttl 300: seconds a verified password stays cached, default 60, 0 = off).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
args=(--data-dir "${DEEPPERT_SERVER_DIR:-mlruns}"
      --host "${DEEPPERT_SERVER_HOST:-127.0.0.1}"
      --port "${DEEPPERT_SERVER_PORT:-5000}")
# DEEPPERT_BACKEND_STORE_URI is read by `deeppert server` from the environment: a password in
# it never appears on a command line (`ps`) nor in the data dir (the server gets PGPASSWORD).
export DEEPPERT_BACKEND_STORE_URI="${DEEPPERT_BACKEND_STORE_URI:-}"
if [[ -n "${DEEPPERT_ARTIFACTS_DIR:-}" ]]; then
  args+=(--artifacts-dir "$DEEPPERT_ARTIFACTS_DIR")
fi
if [[ "${DEEPPERT_SERVER_AUTH:-0}" == "1" ]]; then
  args+=(--auth)
fi
exec "$PY" -m deeppert server "${args[@]}" "$@"
