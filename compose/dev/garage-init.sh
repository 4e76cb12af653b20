#!/bin/sh
# DEV ONLY: prepares the try-out stack's Garage (compose/dev.yml, service garage-init): gives the single node a
# layout, creates the bucket, imports the stack's fixed S3 key and allows it on the bucket. Idempotent: a second
# run finds everything in place and changes nothing. tests/it/compose_dev.rs runs it twice against a real Garage.
#
# Garage's image has no shell to run its CLI from, so this speaks Garage's admin API v2 over HTTP
# (checked against Garage 2.5.0):
#   GET  /v2/GetClusterStatus                 the node's id, and whether it has a role yet
#   POST /v2/UpdateClusterLayout              stage a role for it: {"roles": [{"id", "zone", "capacity", "tags"}]}
#   GET  /v2/GetClusterLayout                 the current layout version
#   POST /v2/ApplyClusterLayout               {"version": current + 1}
#   GET  /v2/GetBucketInfo?globalAlias=NAME   404 while the bucket does not exist
#   POST /v2/CreateBucket                     {"globalAlias": NAME}
#   GET  /v2/GetKeyInfo?id=KEY_ID             404 while the key does not exist
#   POST /v2/ImportKey                        {"accessKeyId", "secretAccessKey", "name"}
#   POST /v2/AllowBucketKey                   {"bucketId", "accessKeyId", "permissions": {"read", "write", "owner"}}
# every call with "Authorization: Bearer <[admin] admin_token of garage.toml>".
#
# Needs curl and jq. Environment:
#   GARAGE_ADMIN_URL      the admin API (default http://garage:3903)
#   GARAGE_CONFIG         garage.toml, read for admin_token (default /etc/garage.toml)
#   GARAGE_ADMIN_TOKEN    the token itself, instead of reading it from GARAGE_CONFIG
#   GARAGE_BUCKET         the bucket to create (default dr-dev)
#   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY   the key to import: the same variables dr reads
#   GARAGE_CAPACITY       the node's capacity in bytes, a layout weight only (default 10 GiB)
#   GARAGE_INIT_TIMEOUT   seconds to wait for the admin API to answer (default 60)
set -eu

admin_url=${GARAGE_ADMIN_URL:-http://garage:3903}
config=${GARAGE_CONFIG:-/etc/garage.toml}
bucket=${GARAGE_BUCKET:-dr-dev}
key_id=${AWS_ACCESS_KEY_ID:?set AWS_ACCESS_KEY_ID to the key id to import}
key_secret=${AWS_SECRET_ACCESS_KEY:?set AWS_SECRET_ACCESS_KEY to the secret to import}
capacity=${GARAGE_CAPACITY:-10737418240}
timeout=${GARAGE_INIT_TIMEOUT:-60}
token=${GARAGE_ADMIN_TOKEN:-$(sed -n 's/^admin_token *= *"\([^"]*\)".*/\1/p' "$config")}
[ -n "$token" ] || { echo "garage-init: no admin_token in $config" >&2; exit 1; }

body=$(mktemp)
trap 'rm -f "$body"' EXIT

log() { echo "garage-init: $*" >&2; }

# call METHOD PATH [JSON]: the answer's body lands in $body, its HTTP status in $status (000: no answer).
call() {
    if [ $# -eq 3 ]; then
        status=$(curl --silent --show-error --output "$body" --write-out '%{http_code}' --request "$1" \
            --header "Authorization: Bearer $token" --header 'Content-Type: application/json' \
            --data "$3" "$admin_url$2") || status=000
    else
        status=$(curl --silent --show-error --output "$body" --write-out '%{http_code}' --request "$1" \
            --header "Authorization: Bearer $token" "$admin_url$2") || status=000
    fi
}

# must METHOD PATH [JSON]: call, and stop unless the answer is a success.
must() {
    call "$@"
    case $status in
        2??) ;;
        *) log "$1 $2 failed: HTTP $status: $(cat "$body")"; exit 1 ;;
    esac
}

# The admin API answers once the node is up (compose also waits for garage's healthcheck).
waited=0
until call GET /v2/GetClusterStatus && [ "$status" = 200 ]; do
    if [ "$waited" -ge "$timeout" ]; then
        log "no answer from $admin_url after ${timeout}s (last HTTP $status: $(cat "$body"))"
        exit 1
    fi
    sleep 1
    waited=$((waited + 1))
done

# Layout: a single node, one zone. Skipped when the node already has a role.
node=$(jq -r '[.nodes[] | select(.isUp)][0].id' "$body")
has_role=$(jq -r --arg id "$node" '.nodes[] | select(.id == $id) | .role != null' "$body")
if [ "$has_role" = true ]; then
    log "node $(printf %.16s "$node") already has a role"
else
    must POST /v2/UpdateClusterLayout "$(jq -n --arg id "$node" --argjson capacity "$capacity" \
        '{roles: [{id: $id, zone: "dc1", capacity: $capacity, tags: []}]}')"
    must GET /v2/GetClusterLayout
    version=$(jq -r '.version' "$body")
    must POST /v2/ApplyClusterLayout "{\"version\": $((version + 1))}"
    log "applied layout version $((version + 1)): node $(printf %.16s "$node") in zone dc1"
fi

# The bucket.
call GET "/v2/GetBucketInfo?globalAlias=$bucket"
case $status in
    200) log "bucket $bucket exists" ;;
    404)
        must POST /v2/CreateBucket "$(jq -n --arg alias "$bucket" '{globalAlias: $alias}')"
        log "created bucket $bucket"
        ;;
    *) log "GET /v2/GetBucketInfo failed: HTTP $status: $(cat "$body")"; exit 1 ;;
esac
bucket_id=$(jq -r '.id' "$body")

# The key, with the fixed id and secret the stack's dr uses.
call GET "/v2/GetKeyInfo?id=$key_id"
case $status in
    200) log "key $key_id exists" ;;
    404)
        must POST /v2/ImportKey "$(jq -n --arg id "$key_id" --arg secret "$key_secret" \
            '{accessKeyId: $id, secretAccessKey: $secret, name: "dr-dev"}')"
        log "imported key $key_id"
        ;;
    *) log "GET /v2/GetKeyInfo failed: HTTP $status: $(cat "$body")"; exit 1 ;;
esac

# Granting the same permissions again is a no-op.
must POST /v2/AllowBucketKey "$(jq -n --arg bucket "$bucket_id" --arg key "$key_id" \
    '{bucketId: $bucket, accessKeyId: $key, permissions: {read: true, write: true, owner: true}}')"
log "key $key_id may read and write bucket $bucket"
