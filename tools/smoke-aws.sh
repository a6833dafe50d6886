#!/usr/bin/env bash
# The guard against AWS itself, for maintainers (docs/proving.md): deploys a
# throwaway stack in a sandbox account you name, launches one IMDSv1
# instance, measures the seconds from `running` to `applied`, checks the
# status tag, the notification, `imds-guard doctor` and a sweep, and deletes
# everything it made, on success, failure or Ctrl-C.
#
# This project's CI has never run it: no machine of ours reaches AWS.
#
#   SMOKE_PLAN=1 tools/smoke-aws.sh        print the plan; no network call at all
#   AWS_PROFILE=sandbox AWS_REGION=eu-west-1 IMDS_GUARD_SMOKE=yes tools/smoke-aws.sh
#
# Refuses: without IMDS_GUARD_SMOKE=yes, an AWS_PROFILE and an AWS_REGION;
# with AWS_ENDPOINT_URL set; in a region holding any instance it did not
# create; while a previous smoke stack exists. Needs aws (v2), sam and the
# imds-guard command line (IMDS_GUARD_BIN, else target/debug/imds-guard).
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
tag=imds-guard-smoke

plan() {
  cat <<EOF
imds-guard smoke test against AWS: the plan (nothing is called in plan mode)
 0. refuse unless IMDS_GUARD_SMOKE=yes, AWS_PROFILE and AWS_REGION are set and
    AWS_ENDPOINT_URL is not; name the account (sts get-caller-identity)
 1. refuse if the region holds any instance not tagged $tag=<this run>, or a
    stack named $tag-* exists
 2. a trail logging write management events in the region: checked; if none,
    one is created (with its own S3 bucket) and removed at the end
 3. sam build, then sam deploy of stack $tag-<run>: GuardMode=enforce,
    Triggers=both, SetAccountDefault=false, SelfCheckSchedule empty
 4. an SQS queue subscribed to the stack's topic, to read the notification
 5. one instance: the latest Amazon Linux 2023 arm64 AMI (SSM public
    parameter), the smallest arm64 type (t4g.nano), no instance profile, no
    public address, a new security group with no ingress, HttpTokens=optional,
    tagged $tag=<run>
 6. measure the seconds from EC2 showing it running to EC2 showing
    HttpTokens=required applied (polled every second, 15 minutes at most)
 7. check the status tag, the notification in the queue, imds-guard doctor
    (after running the self-check again, now that an instance exists), and
    an audit sweep of the region
 8. delete, on success, failure or Ctrl-C: the instance, the security group,
    the queue, the stack, the retained memory table and log group, the KMS
    key (deletion scheduled at the minimum, 7 days), the trail and bucket if
    created here; then list anything that could not be deleted
 9. write smoke-report.txt (send it back: docs/proving.md) and an estimate
    of the cost (a t4g.nano for the run's minutes, Lambda, EventBridge,
    DynamoDB and CloudTrail within a few cents; the KMS key until deleted)
EOF
}

if [ "${SMOKE_PLAN:-}" = 1 ]; then
  plan
  exit 0
fi

refuse() { echo "smoke-aws: refused: $*" >&2; exit 3; }
[ "${IMDS_GUARD_SMOKE:-}" = yes ] || refuse "this deploys to and launches in a real account: set IMDS_GUARD_SMOKE=yes (SMOKE_PLAN=1 shows the plan)"
[ -n "${AWS_PROFILE:-}" ] || refuse "name the sandbox account's profile: AWS_PROFILE=<profile>"
[ -z "${AWS_ENDPOINT_URL:-}" ] || refuse "AWS_ENDPOINT_URL is set ($AWS_ENDPOINT_URL): this test is for AWS itself"
region="${AWS_REGION:-}"
[ -n "$region" ] || refuse "name the region: AWS_REGION=<region>"
guard_bin="${IMDS_GUARD_BIN:-$here/target/debug/imds-guard}"

aws_() { aws --region "$region" --output json "$@"; }
text() { aws --region "$region" --output text "$@"; }
say() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

run="$(date -u +%Y%m%d%H%M%S)-$$"
stack="$tag-$run"
report="${SMOKE_REPORT:-$here/smoke-report.txt}"
: > "$report"
note() { printf '%s\n' "$*" | tee -a "$report" >&2; }

if [ ! -x "$guard_bin" ]; then
  say "building the command line ($guard_bin)"
  (cd "$here" && cargo build --quiet --bin imds-guard)
fi
account="$(text sts get-caller-identity --query Account)"
note "smoke $run: account $account, region $region, stack $stack"

others="$(text ec2 describe-instances \
  --filters Name=instance-state-name,Values=pending,running,stopping,stopped \
  --query 'Reservations[].Instances[].InstanceId')"
[ -z "$others" ] || [ "$others" = None ] || refuse "region $region holds instances this test did not create ($others): use an empty sandbox region"
previous="$(text cloudformation describe-stacks \
  --query "Stacks[?starts_with(StackName, '$tag-')].StackName" 2>/dev/null || true)"
[ -z "$previous" ] || [ "$previous" = None ] || refuse "a previous smoke stack is still there ($previous): delete it first (and its retained table $previous-memory)"

# What was made, for the teardown: "kind id" lines, deleted last first.
made=()
left=()
done_teardown=
teardown() {
  [ -z "$done_teardown" ] || return 0
  done_teardown=1
  say "teardown: ${#made[@]} thing(s) to delete"
  local i kind id
  for ((i = ${#made[@]} - 1; i >= 0; i--)); do
    kind="${made[$i]%% *}"
    id="${made[$i]#* }"
    if ! delete "$kind" "$id"; then
      left+=("$kind $id")
    fi
  done
  if [ "${#left[@]}" -gt 0 ]; then
    note "NOT deleted (delete by hand):"
    printf '  %s\n' "${left[@]}" | tee -a "$report" >&2
  else
    note "everything this run made was deleted (the KMS key is pending deletion)"
  fi
  note "cost estimate: a t4g.nano for ${SECONDS}s (about \$0.0042 an hour on demand in us-east-1),"
  note "  Lambda, EventBridge, SQS, SNS and DynamoDB on-demand calls within their free tiers or a cent,"
  note "  CloudTrail's first copy of management events free (S3 storage for a created trail: cents),"
  note "  the KMS key about \$1 a month, prorated, until it is deleted: check your own pricing"
}

delete() {
  local kind="$1" id="$2"
  say "deleting $kind $id"
  case "$kind" in
    instance)
      aws_ ec2 terminate-instances --instance-ids "$id" >/dev/null &&
        aws_ ec2 wait instance-terminated --instance-ids "$id" ;;
    security-group) aws_ ec2 delete-security-group --group-id "$id" ;;
    queue) aws_ sqs delete-queue --queue-url "$id" ;;
    stack)
      local key
      key="$(text cloudformation describe-stack-resource --stack-name "$id" \
        --logical-resource-id NotificationKey --query StackResourceDetail.PhysicalResourceId 2>/dev/null || true)"
      aws_ cloudformation delete-stack --stack-name "$id" &&
        aws_ cloudformation wait stack-delete-complete --stack-name "$id" || return 1
      # Retained by the template (DeletionPolicy: Retain).
      aws_ dynamodb delete-table --table-name "$id-memory" >/dev/null || left+=("table $id-memory")
      aws_ logs delete-log-group --log-group-name "/aws/lambda/$id-imds-guard" || left+=("log-group /aws/lambda/$id-imds-guard")
      if [ -n "$key" ] && [ "$key" != None ]; then
        # The stack schedules it at 30 days; shorten to the minimum.
        aws_ kms cancel-key-deletion --key-id "$key" >/dev/null 2>&1 || true
        aws_ kms schedule-key-deletion --key-id "$key" --pending-window-in-days 7 >/dev/null || left+=("kms-key $key")
      fi ;;
    trail)
      aws_ cloudtrail stop-logging --name "$id" || true
      aws_ cloudtrail delete-trail --name "$id" ;;
    bucket) aws_ s3 rb "s3://$id" --force ;;
    *) return 1 ;;
  esac
}

trap 'teardown; exit 130' INT
trap 'teardown; exit 143' TERM
trap 'teardown' EXIT

# 2. A trail.
trail="$(text cloudtrail describe-trails --include-shadow-trails \
  --query 'trailList[?IsMultiRegionTrail==`true` || HomeRegion==`'"$region"'`].TrailARN')"
logging=
for t in $trail; do
  [ "$t" = None ] && continue
  if [ "$(text cloudtrail get-trail-status --name "$t" --query IsLogging 2>/dev/null || true)" = True ]; then
    logging="$t"
    break
  fi
done
if [ -n "$logging" ]; then
  note "trail: $logging is logging"
else
  bucket="$tag-$run-$account"
  aws_ s3 mb "s3://$bucket" >/dev/null
  made+=("bucket $bucket")
  aws_ s3api put-bucket-policy --bucket "$bucket" --policy "$(cat <<EOF
{"Version":"2012-10-17","Statement":[
 {"Effect":"Allow","Principal":{"Service":"cloudtrail.amazonaws.com"},"Action":"s3:GetBucketAcl","Resource":"arn:aws:s3:::$bucket"},
 {"Effect":"Allow","Principal":{"Service":"cloudtrail.amazonaws.com"},"Action":"s3:PutObject","Resource":"arn:aws:s3:::$bucket/AWSLogs/$account/*","Condition":{"StringEquals":{"s3:x-amz-acl":"bucket-owner-full-control"}}}]}
EOF
)"
  aws_ cloudtrail create-trail --name "$stack" --s3-bucket-name "$bucket" >/dev/null
  made+=("trail $stack")
  aws_ cloudtrail start-logging --name "$stack"
  note "trail: none was logging; created $stack (removed at the end)"
fi

# 3. The stack.
say "sam build (the first build takes minutes)"
(cd "$here" && sam build --beta-features --region "$region" >/dev/null)
made+=("stack $stack")
say "sam deploy $stack"
(cd "$here" && sam deploy --stack-name "$stack" --region "$region" --resolve-s3 \
  --capabilities CAPABILITY_IAM --no-confirm-changeset --no-fail-on-empty-changeset \
  --parameter-overrides GuardMode=enforce Triggers=both SetAccountDefault=false 'SelfCheckSchedule=""' \
  >/dev/null)
output() { text cloudformation describe-stacks --stack-name "$stack" --query "Stacks[0].Outputs[?OutputKey=='$1'].OutputValue"; }
topic="$(output TopicArn)"
table="$(output MemoryTableName)"

# 4. A queue on the topic.
queue="$(text sqs create-queue --queue-name "$stack" --query QueueUrl)"
made+=("queue $queue")
queue_arn="$(text sqs get-queue-attributes --queue-url "$queue" --attribute-names QueueArn --query Attributes.QueueArn)"
aws_ sqs set-queue-attributes --queue-url "$queue" --attributes "$(cat <<EOF
{"Policy":"{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Allow\",\"Principal\":{\"Service\":\"sns.amazonaws.com\"},\"Action\":\"sqs:SendMessage\",\"Resource\":\"$queue_arn\",\"Condition\":{\"ArnEquals\":{\"aws:SourceArn\":\"$topic\"}}}]}"}
EOF
)"
aws_ sns subscribe --topic-arn "$topic" --protocol sqs --notification-endpoint "$queue_arn" >/dev/null

# 5. The instance.
ami="$(text ssm get-parameter --name /aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64 --query Parameter.Value)"
vpc="$(text ec2 describe-vpcs --filters Name=is-default,Values=true --query 'Vpcs[0].VpcId')"
sg="$(text ec2 create-security-group --group-name "$stack" --description "imds-guard smoke: no ingress" --vpc-id "$vpc" --query GroupId)"
made+=("security-group $sg")
instance="$(text ec2 run-instances --image-id "$ami" --instance-type t4g.nano --count 1 \
  --security-group-ids "$sg" --no-associate-public-ip-address \
  --metadata-options HttpTokens=optional,HttpEndpoint=enabled \
  --tag-specifications "ResourceType=instance,Tags=[{Key=$tag,Value=$run}]" \
  --query 'Instances[0].InstanceId')"
made+=("instance $instance")
note "instance: $instance ($ami, t4g.nano, HttpTokens=optional)"

# 6. Seconds from running to applied.
t_running=
t_applied=
for _ in $(seq 1 900); do
  row="$(text ec2 describe-instances --instance-ids "$instance" \
    --query 'Reservations[0].Instances[0].[State.Name,MetadataOptions.HttpTokens,MetadataOptions.State]' || true)"
  now="$(date +%s.%N)"
  set -- $row
  [ -z "$t_running" ] && [ "${1:-}" = running ] && t_running="$now"
  if [ -n "$t_running" ] && [ "${2:-}" = required ] && [ "${3:-}" = applied ]; then
    t_applied="$now"
    break
  fi
  sleep 1
done
if [ -n "$t_applied" ]; then
  note "seconds from running to applied: $(awk "BEGIN {printf \"%.1f\", $t_applied - $t_running}")"
else
  note "NOT applied within 15 minutes (running at ${t_running:-never})"
fi

# 7. What the guard left and said.
status="$(text ec2 describe-tags --filters "Name=resource-id,Values=$instance" "Name=key,Values=imds-guard:status" --query 'Tags[0].Value')"
note "status tag: $status"
heard=
for _ in $(seq 1 15); do
  if text sqs receive-message --queue-url "$queue" --wait-time-seconds 20 --max-number-of-messages 10 \
    --query 'Messages[].Body' | grep -q "$instance"; then
    heard=yes
    break
  fi
done
note "notification naming $instance: ${heard:-not received within 5 minutes}"
# The deploy's self-check ran before this instance existed: run it again.
aws_ lambda invoke --function-name "$(output SelfCheckFunctionName)" \
  --payload '{"imds_guard_self_check": "invoke"}' --cli-binary-format raw-in-base64-out \
  "${TMPDIR:-/tmp}/$stack-self-check.json" >/dev/null || note "the self-check could not be invoked"
set +e
IMDS_GUARD_STACK="$stack" "$guard_bin" doctor --stack "$stack" --region "$region" | tee -a "$report" >&2
note "doctor exit: ${PIPESTATUS[0]}"
MEMORY_TABLE="$table" "$guard_bin" sweep --region "$region" | tee -a "$report" >&2
note "sweep exit: ${PIPESTATUS[0]}"
set -e
note "report: $report"
