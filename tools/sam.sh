#!/usr/bin/env bash
# Runs the SAM CLI or cfn-lint from their own virtualenv, offline: telemetry
# off, dummy credentials, and every AWS endpoint pointed at a closed port on
# loopback, so nothing here can reach AWS.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
export PATH="$here/.venv-sam/bin:$here/.venv/bin:$PATH"
export SAM_CLI_TELEMETRY=0 SAM_CLI_DISABLE_UPDATE_CHECK=1
export AWS_ACCESS_KEY_ID=offline AWS_SECRET_ACCESS_KEY=offline AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
export AWS_ENDPOINT_URL=http://127.0.0.1:9 AWS_EC2_METADATA_DISABLED=true
exec "$@"
