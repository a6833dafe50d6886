#!/usr/bin/env bash
# The guardrail end to end, locally: the emulator (started by with-moto.sh),
# an IMDSv1 instance, its launch event delivered to the function through a
# local Lambda runtime (cargo lambda watch + invoke), before and after.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
export PATH="$here/.venv/bin:$PATH"
emu() { "$here/.venv/bin/python" "$here/tools/emulator.py" "$@"; }
work="$(mktemp -d)"
watch_pid=""
cleanup() {
  if [ -n "$watch_pid" ]; then kill -- "-$watch_pid" 2>/dev/null || kill "$watch_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. An SNS topic for notifications, and an instance launched with IMDSv1 open (HttpTokens=optional)"
topic="$(emu topic imds-guard-demo)"
id="$(emu launch --tokens optional --hop 2)"
echo "  topic $topic"
emu show "$id"

step "2. The CloudTrail RunInstances event EventBridge would deliver (events/run-instances-console.json, with this instance)"
emu event events/run-instances-console.json "$id" > "$work/event.json"
echo "  $(grep -c '' "$work/event.json") lines; principal arn:aws:iam::111122223333:user/alice"

step "3. What the function would do, offline (imds-guard check)"
echo "  (building the function; the first build on a fresh machine takes several minutes)"
cargo build --quiet --bin imds-guard
NOTIFY_TOPIC_ARN="$topic" target/debug/imds-guard check "$work/event.json" || true

step "4. The function under a local Lambda runtime (cargo lambda watch), and the event delivered (cargo lambda invoke)"
port="$("$here/.venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
setsid cargo lambda watch --quiet --ignore-changes --invoke-address 127.0.0.1 --invoke-port "$port" \
  --env-var "GUARD_MODE=enforce,NOTIFY_TOPIC_ARN=$topic,AWS_ENDPOINT_URL=$MOTO_ENDPOINT,AWS_REGION=us-east-1,AWS_LAMBDA_LOG_FORMAT=JSON" \
  > "$work/watch.log" 2>&1 &
watch_pid=$!
for _ in $(seq 1 150); do
  if "$here/.venv/bin/python" -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null; then break; fi
  sleep 0.2
done
cargo lambda invoke --invoke-address 127.0.0.1 --invoke-port "$port" --data-file "$work/event.json" imds-guard-event \
  > "$work/response.json" || { echo "invoke failed; function log:"; cat "$work/watch.log"; exit 1; }
echo "  function response:"
"$here/.venv/bin/python" -m json.tool "$work/response.json" | sed 's/^/    /'

step "5. The instance after"
emu show "$id"

step "6. The notification received on the topic"
emu messages "$topic"

step "Function log (structured, one line per decision)"
grep -E '"decision"|decision|event handled' "$work/watch.log" | tail -5 | sed 's/^/  /' || true

tokens_after="$(emu show "$id" | grep -o 'HttpTokens=[a-z]*')"
[ "$tokens_after" = "HttpTokens=required" ] || { echo "demo: expected HttpTokens=required, got $tokens_after" >&2; exit 1; }

step "7. Three instances whose launch events never arrived (launched before the guardrail, say)"
old_ids=()
for _ in 1 2 3; do old_ids+=("$(emu launch --tokens optional --hop 1)"); done
for i in "${old_ids[@]}"; do emu show "$i"; done

step "8. How far is the region from IMDSv2 everywhere? (imds-guard sweep --mode audit: writes nothing, exits 1 when something is left)"
set +e
AWS_REGION=us-east-1 NOTIFY_TOPIC_ARN= target/debug/imds-guard sweep --mode audit
echo "  exit status $?"
set -e

step "9. The scheduled sweep, delivered to the function (events/scheduled-event.json)"
cargo lambda invoke --invoke-address 127.0.0.1 --invoke-port "$port" --data-file events/scheduled-event.json imds-guard-sweep \
  > "$work/sweep.json" || { echo "invoke failed; function log:"; tail -20 "$work/watch.log"; exit 1; }
"$here/.venv/bin/python" - "$work/sweep.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
for g in r["sweep"]["regions"]:
    print(f"  {g['region']}: examined {g['examined']}, counts {g['counts']}, listing: {g['listing']}")
    print(f"  readiness for HttpTokensEnforced: {g['readiness']['verdict']} {g['readiness'].get('reasons', [])}")
print(f"  AWS calls: {r.get('aws_calls', {})}")
print(f"  notification: {r['notification']}")
PY
for i in "${old_ids[@]}"; do emu show "$i"; done
echo "  summary on the topic:"
emu messages "$topic" | grep -i 'subject' | tail -1

for i in "${old_ids[@]}"; do
  t="$(emu show "$i" | grep -o 'HttpTokens=[a-z]*')"
  [ "$t" = "HttpTokens=required" ] || { echo "demo: the sweep left $i at $t" >&2; exit 1; }
done
printf '\n\033[1mDone:\033[0m the launch was switched to IMDSv2 (HttpTokens=required) within its event, the instances no event named were found and fixed by the sweep, and the team notified each time.\n'
