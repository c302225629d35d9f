#!/bin/sh
# Container entry point: `edgekit serve` configured from the environment, then exec'd, so it is PID 1
# and gets SIGTERM from `docker stop` directly (it stops cleanly, exit 0).
#   EDGEKIT_MODELS     artifacts to serve, [name=]path, space-separated (default: every /models/*.tflite)
#   EDGEKIT_HOST       interface (default 0.0.0.0: reachable through -p; the web page is then off unless --ui)
#   EDGEKIT_PORT       REST port (default 8080)
#   EDGEKIT_GRPC_PORT  also serve gRPC on this port (default: off)
#   EDGEKIT_API_KEY    required key (read by edgekit serve itself); strongly advised on 0.0.0.0
# Arguments given to `docker run IMAGE ...` are appended to the edgekit serve command line.
set -eu

host="${EDGEKIT_HOST:-0.0.0.0}"
port="${EDGEKIT_PORT:-8080}"
models="${EDGEKIT_MODELS:-}"
if [ -z "$models" ]; then
    for f in /models/*.tflite; do
        [ -e "$f" ] && models="$models $f"
    done
fi
if [ -z "$models" ]; then
    echo "edgekit-entrypoint: no models: mount artifacts at /models (-v \$PWD/artifacts:/models:ro) or set EDGEKIT_MODELS" >&2
    exit 2
fi
if [ -z "${EDGEKIT_API_KEY:-}" ] && [ "$host" != "127.0.0.1" ] && [ "$host" != "::1" ]; then
    echo "edgekit-entrypoint: warning: no EDGEKIT_API_KEY; anyone who reaches port $port can use the models" >&2
fi
set -- --host "$host" --port "$port" ${EDGEKIT_GRPC_PORT:+--grpc-port "$EDGEKIT_GRPC_PORT"} "$@"
# $models unquoted on purpose: a space-separated list (artifact paths with spaces: use EDGEKIT_MODELS=name=path)
# shellcheck disable=SC2086
exec edgekit serve $models "$@"
