#!/usr/bin/env bash
# Build .devsite/devsite.tar.xz: Ray, MLflow and the dependencies of ours that the lent GPU
# machine lacks, installed for its CPython 3.12 (x86-64) with `pip install --target`, for
# bench/device_platform_scale.sh. Versions are requirements.lock's. What a headless run does
# not need is left out to fit the device tool's 64 MiB: Ray's Java jars and RLlib, MLflow's
# web UI bundle, source maps. Run from the repository root; .devsite/ is git-ignored locally
# (echo /.devsite/ >> .git/info/exclude).
set -euo pipefail
# the machine's own packages (KINDS.md) minus ours: what must travel
MISSING=(aiohttp-cors alembic annotated-types blinker cachetools captum cffi colorful cryptography
    databricks-sdk distlib docker fastapi flask flask-cors gitdb gitpython google-api-core
    google-auth google-crc32c googleapis-common-protos graphene graphql-core graphql-relay
    gunicorn huey importlib-metadata itsdangerous jsonschema jsonschema-specifications mako
    mlflow mlflow-skinny mlflow-tracing opencensus opencensus-context opentelemetry-api
    opentelemetry-exporter-prometheus opentelemetry-proto opentelemetry-sdk
    opentelemetry-semantic-conventions platformdirs prettytable proto-plus py-spy pyasn1
    pyasn1-modules pycparser pydantic pydantic-core python-discovery python-dotenv pytz ray referencing
    rpds-py smart-open smmap sqlalchemy sqlparse starlette tensorboardx typing-inspection tzdata
    uvicorn virtualenv wcwidth)
pins=()
for name in "${MISSING[@]}"; do
    pattern=$(echo "$name" | sed 's/[-_.]/[-_.]/g')
    pins+=("$(grep -i -E "^${pattern}==" requirements.lock | head -n1)")
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip install -q --no-deps --target "$work/devsite" --only-binary=:all: \
    --python-version 3.12 --implementation cp --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 "${pins[@]}"
cd "$work/devsite"
rm -rf ray/jars ray/rllib mlflow/server/js ray/dashboard/client/build/static/js/*.map
find . -name __pycache__ -prune -exec rm -rf {} +
sed -i '1s|^#!.*python.*$|#!/usr/bin/env python3|' bin/*  # the machine's python3, not ours
cd - >/dev/null
mkdir -p .devsite
tar -cf - -C "$work" devsite | xz -T0 -6 > .devsite/devsite.tar.xz
ls -l .devsite/devsite.tar.xz
