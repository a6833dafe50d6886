#!/usr/bin/env bash
# Runs a command with the local AWS emulator (moto's server) up on
# 127.0.0.1 on a free port, and stops the emulator afterwards.
# The command sees MOTO_ENDPOINT and AWS_ENDPOINT_URL pointing at it, and
# dummy credentials, so nothing it starts can reach a real AWS endpoint.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
venv="${VENV:-$here/.venv}"
[ -x "$venv/bin/moto_server" ] || { echo "with-moto: $venv/bin/moto_server missing; run 'make venv'" >&2; exit 2; }

port="$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
log="${MOTO_LOG:-$(mktemp -t moto.XXXXXX.log)}"
# moto's server, with ModifyInstanceMetadataOptions keeping what a request
# leaves out, as AWS documents (tools/moto_server.py).
"$venv/bin/python" "$here/tools/moto_server.py" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
moto_pid=$!
cleanup() { kill "$moto_pid" 2>/dev/null || true; wait "$moto_pid" 2>/dev/null || true; }
trap cleanup EXIT INT TERM

for _ in $(seq 1 100); do
  if "$venv/bin/python" -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/', timeout=1)" 2>/dev/null; then
    break
  fi
  kill -0 "$moto_pid" 2>/dev/null || { echo "with-moto: emulator exited; log:" >&2; cat "$log" >&2; exit 2; }
  sleep 0.2
done

export MOTO_ENDPOINT="http://127.0.0.1:$port"
export AWS_ENDPOINT_URL="$MOTO_ENDPOINT"
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_SESSION_TOKEN=testing
export AWS_REGION="${AWS_REGION:-us-east-1}" AWS_DEFAULT_REGION="${AWS_REGION:-us-east-1}"
export AWS_EC2_METADATA_DISABLED=true
echo "with-moto: emulator at $MOTO_ENDPOINT (log $log)" >&2
"$@"
