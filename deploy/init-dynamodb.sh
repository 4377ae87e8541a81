#!/bin/sh
# One-shot: create the canvas table in DynamoDB (Local) if it does not exist yet.
# Used by docker-compose.yml (service dynamodb-init, image amazon/aws-cli). Idempotent:
# an existing table (or a concurrent creator's ResourceInUseException) counts as success.
#
# Env: DYNAMODB_ENDPOINT (required), CANVAS_TABLE (default canvas_objects), AWS_REGION,
#      AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (dummy values for DynamoDB Local).
set -eu

endpoint="${DYNAMODB_ENDPOINT:?DYNAMODB_ENDPOINT must be set}"
table="${CANVAS_TABLE:-canvas_objects}"

ddb() { aws dynamodb --endpoint-url "$endpoint" "$@"; }

# DynamoDB Local may still be starting even when its healthcheck passed once: retry ~30 s.
i=0
until ddb list-tables >/dev/null 2>&1; do
  i=$((i + 1))
  if [ "$i" -ge 30 ]; then
    echo "init-dynamodb: $endpoint not reachable after 30 attempts" >&2
    ddb list-tables >&2 || true
    exit 1
  fi
  sleep 1
done

if ddb describe-table --table-name "$table" >/dev/null 2>&1; then
  echo "init-dynamodb: table $table already exists"
  exit 0
fi

if ! out=$(ddb create-table \
    --table-name "$table" \
    --attribute-definitions AttributeName=projectId,AttributeType=S AttributeName=objectId,AttributeType=S \
    --key-schema AttributeName=projectId,KeyType=HASH AttributeName=objectId,KeyType=RANGE \
    --billing-mode PAY_PER_REQUEST 2>&1); then
  case "$out" in
    *ResourceInUseException*|*"already exists"*)
      echo "init-dynamodb: table $table already exists (created concurrently)"
      exit 0 ;;
    *)
      echo "init-dynamodb: create-table failed: $out" >&2
      exit 1 ;;
  esac
fi

# Wait for ACTIVE (DynamoDB Local is immediate; real DynamoDB takes a few seconds).
i=0
while :; do
  status=$(ddb describe-table --table-name "$table" --query 'Table.TableStatus' --output text 2>/dev/null || echo UNKNOWN)
  [ "$status" = "ACTIVE" ] && break
  i=$((i + 1))
  if [ "$i" -ge 60 ]; then
    echo "init-dynamodb: table $table not ACTIVE after 60 s (status $status)" >&2
    exit 1
  fi
  sleep 1
done
echo "init-dynamodb: created table $table (projectId S / objectId S, PAY_PER_REQUEST)"

# Tombstones of deleted objects carry purgeAt (epoch seconds, a week after the delete); time to live removes them.
# DynamoDB Local may not implement time to live: the table works without it, its tombstones just stay.
if ddb update-time-to-live --table-name "$table" \
    --time-to-live-specification Enabled=true,AttributeName=purgeAt >/dev/null 2>&1; then
  echo "init-dynamodb: time to live enabled on purgeAt"
else
  echo "init-dynamodb: time to live not enabled on purgeAt (not supported here); tombstones stay"
fi
