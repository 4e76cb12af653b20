#!/usr/bin/env bash
# remote-deploy.sh: switch dr's compose service on this server to another image tag, wait until it is ready,
# and go back to the previous tag when it is not. Runs on the server as the deploy user, usually sent over SSH
# by .github/workflows/deploy.yml:
#
#   ssh deploy@HOST 'bash -s' -- sha-0123abcd... < deploy/remote-deploy.sh
#   ssh deploy@HOST 'bash -s' -- --rollback   < deploy/remote-deploy.sh
#
# docs/deployment.md walks through upgrades and rollbacks. Exit codes:
#   0  the new tag runs and is ready (--rollback: the previous tag runs and is ready)
#   1  the new tag failed (pull, start or readiness); the tag that ran before runs again and is ready
#   2  the new tag failed and going back failed too: the service is NOT ready, a person must look now
#   3  refused before changing anything (bad tag or option, no .env, no earlier tag, lock timeout)
set -euo pipefail

readonly TAG_RE='^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$' # Docker's tag grammar: no '/', ':', spaces, leading '-'

usage() {
    cat <<'EOF'
Usage: remote-deploy.sh TAG          deploy image tag TAG of the dr service
       remote-deploy.sh --rollback   go back to the tag deployed before the current one (.deployed-tags)

Run on the server as the deploy user, in $DR_HOME (default /srv/dr), which holds compose.yml and .env.
Sets DR_TAG in .env, pulls and starts the service, and waits for the container to be healthy and
GET /readyz to answer 200; when that does not happen, returns to the previous tag the same way.

Environment:
  DR_HOME             directory with compose.yml, .env and .deployed-tags (default /srv/dr)
  DR_READY_TIMEOUT    seconds to wait for readiness, each way (default 180)
  DR_READY_INTERVAL   seconds between readiness checks (default 5)
  DR_READY_PATH       endpoint that must answer 200 (default /readyz; /healthz to gate on liveness only)
  DR_METRICS_PORT     host port of dr's endpoints on 127.0.0.1 (default: .env's value, else 9187)
  DR_LOCK_TIMEOUT     seconds to wait for another deploy to finish (default 900)

Exit codes: 0 ready; 1 failed and back on the previous tag, which is ready; 2 failed and going back failed
too (the service is not ready); 3 refused, nothing changed.
EOF
}

log() { printf 'remote-deploy: %s\n' "$*"; }
fail() {
    printf 'remote-deploy: error: %s\n' "$1" >&2
    exit "${2:-3}"
}

# The value of KEY in .env, without quotes; empty when absent. .env is compose's format, never sourced.
env_get() {
    local key=$1 line value=''
    while IFS= read -r line || [[ -n $line ]]; do
        if [[ $line =~ ^[[:space:]]*(export[[:space:]]+)?${key}[[:space:]]*=[[:space:]]*(.*)$ ]]; then
            value=${BASH_REMATCH[2]}
        fi
    done <.env
    if [[ $value =~ ^\"([^\"]*)\" || $value =~ ^\'([^\']*)\' ]]; then
        value=${BASH_REMATCH[1]}
    else
        value=${value%%[[:space:]]#*}
        value=${value%"${value##*[![:space:]]}"}
    fi
    printf '%s' "$value"
}

# Write the output of COMMAND... to TARGET in one rename, so a failure or a crash never leaves it half written
# (or empty); the new file keeps the old one's mode.
replace_file() {
    local target=$1 tmp
    shift
    tmp=$(mktemp "$target.XXXXXX") || return 1
    if "$@" >"$tmp" &&
        if [[ -e $target ]]; then chmod --reference="$target" "$tmp"; else chmod 0644 "$tmp"; fi &&
        sync "$tmp" && mv -f "$tmp" "$target"; then
        return 0
    fi
    rm -f "$tmp"
    return 1
}

env_with_tag() {
    awk -v tag="$1" '
        /^[[:space:]]*(export[[:space:]]+)?DR_TAG[[:space:]]*=/ { if (!done) print "DR_TAG=" tag; done = 1; next }
        { print }
        END { if (!done) print "DR_TAG=" tag }
    ' .env
}

history_tags() {
    [[ -f .deployed-tags ]] || return 0
    local line
    while IFS= read -r line || [[ -n $line ]]; do
        if [[ $line =~ $TAG_RE ]]; then printf '%s\n' "$line"; fi
    done <.deployed-tags
}

# Append TAG to the history unless it is already the newest entry.
history_push() {
    local last
    last=$(history_tags | tail -n 1)
    if [[ -n $1 && $1 != "$last" ]]; then
        printf '%s\n' "$1" >>.deployed-tags
    fi
}

# Every compose call names the tag in the environment too, which takes precedence over .env: a pull can then
# happen before .env changes, and a stray DR_TAG in the caller's environment cannot pick the image.
compose() {
    local tag=$1
    shift
    DR_TAG=$tag docker compose --env-file .env -f compose.yml "$@"
}

# "<image id> <image reference> <health, or state without a health check>" of the service's container.
container_state() {
    local id
    id=$(compose "$1" ps -a -q "$SERVICE" 2>/dev/null | head -n 1) || true
    [[ -n $id ]] || return 0
    docker inspect --format \
        '{{.Image}} {{.Config.Image}} {{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' \
        "$id" 2>/dev/null || true
}

# Ready = the container runs TAG's image, Docker's health check passes, and the ready endpoint answers 200.
# Sets NOT_READY to the reason when it is not.
is_ready() {
    local tag=$1 image ref health
    read -r image ref health <<<"$(container_state "$tag")"
    if [[ -z ${ref:-} ]]; then
        NOT_READY="no $SERVICE container"
    elif [[ $ref != *":$tag" ]]; then
        NOT_READY="the container runs $ref ($image), not tag $tag"
    elif [[ $health != healthy && $health != running ]]; then
        NOT_READY="the container is $health"
    elif ! curl -fsS --max-time 5 -o /dev/null "$READY_URL" 2>/dev/null; then
        NOT_READY="$READY_URL does not answer 200"
    else
        return 0
    fi
    return 1
}

wait_ready() {
    local tag=$1 deadline=$((SECONDS + READY_TIMEOUT)) said=''
    NOT_READY=''
    log "waiting up to ${READY_TIMEOUT}s for $SERVICE ($tag) to be healthy and $READY_URL to answer 200"
    while true; do
        if is_ready "$tag"; then
            log "$SERVICE ($tag) is ready after $((SECONDS + READY_TIMEOUT - deadline))s"
            return 0
        fi
        if [[ $NOT_READY != "$said" ]]; then
            log "not ready yet: $NOT_READY"
            said=$NOT_READY
        fi
        if ((SECONDS >= deadline)); then
            log "$SERVICE ($tag) is not ready after ${READY_TIMEOUT}s: $NOT_READY"
            return 1
        fi
        sleep "$READY_INTERVAL"
    done
}

# What a person needs to see when a tag did not come ready: the ready endpoint's reasons and the last logs.
diagnose() {
    log "--- $READY_URL answers:"
    curl -sS --max-time 5 "$READY_URL" 2>&1 | head -n 20 || true
    printf '\n'
    log "--- last log lines of $SERVICE:"
    compose "$1" logs --no-color --tail 40 "$SERVICE" 2>&1 || true
    log "---"
}

switch_to() {
    replace_file .env env_with_tag "$1" || return 1
    log "DR_TAG=$1 in $DR_HOME/.env; starting $SERVICE"
    compose "$1" up -d "$SERVICE"
}

# Go back to TAG after FAILED did not come ready. When the image that ran before is known and carried that tag,
# the tag is pointed at it again first: a mutable tag (production, staging) may have moved in the pull.
go_back() {
    local failed=$1 tag=$2 image=$3 ref=$4
    if [[ -z $tag ]]; then
        fail "$failed is not ready and .env named no tag before it: nothing to go back to; $SERVICE is NOT ready" 2
    fi
    log "going back to $tag"
    if [[ -n $image && $ref == *":$tag" ]]; then
        docker tag "$image" "$ref" || log "could not re-tag $image as $ref; using what $tag names now"
    fi
    if switch_to "$tag" && wait_ready "$tag"; then
        log "FAILED: $failed did not come ready; back on $tag, which is ready"
        exit 1
    fi
    diagnose "$tag"
    fail "$failed did not come ready, and going back to $tag failed too: $SERVICE is NOT ready. If $tag was fine
before, the cause is outside the image (the repository, the newest snapshot's age against the RPO, the config)" 2
}

deploy() {
    local new=$1 current image ref
    current=$(env_get DR_TAG)
    history_push "$current"
    read -r image ref _ <<<"$(container_state "$current")"
    if [[ $new == "$current" ]]; then
        log "redeploying $new: a mutable tag gets whatever it names now in the registry"
    fi
    log "deploying $new (running: ${current:-none})"
    if ! compose "$new" pull "$SERVICE"; then
        fail "could not pull $new; nothing changed, ${current:-nothing} still runs" 1
    fi
    if switch_to "$new" && wait_ready "$new"; then
        history_push "$new"
        log "deployed $new (previous: ${current:-none})"
        exit 0
    fi
    diagnose "$new"
    go_back "$new" "$current" "${image:-}" "${ref:-}"
}

rollback() {
    local current target='' keep=0 tags image ref i
    current=$(env_get DR_TAG)
    history_push "$current"
    mapfile -t tags < <(history_tags)
    for ((i = ${#tags[@]} - 1; i >= 0; i--)); do
        if [[ ${tags[i]} != "$current" ]]; then
            target=${tags[i]}
            keep=$((i + 1))
            break
        fi
    done
    [[ -n $target ]] || fail "no tag before ${current:-the current one} in $DR_HOME/.deployed-tags: nothing to roll back to"
    read -r image ref _ <<<"$(container_state "$current")"
    log "rolling back from ${current:-none} to $target"
    if switch_to "$target" && wait_ready "$target"; then
        replace_file .deployed-tags printf '%s\n' "${tags[@]:0:keep}" ||
            log "warning: could not rewrite $DR_HOME/.deployed-tags; drop the entries after $target by hand"
        log "rolled back to $target (was ${current:-none})"
        exit 0
    fi
    diagnose "$target"
    go_back "$target" "$current" "${image:-}" "${ref:-}"
}

main() {
    # With `bash -s` the rest of this script is still on stdin: no command may read it.
    exec </dev/null
    local mode=deploy tag=''
    case ${1:-} in
    -h | --help)
        usage
        exit 0
        ;;
    --rollback) mode=rollback ;;
    *) tag=${1:-} ;;
    esac
    (($# == 1)) || {
        usage >&2
        exit 3
    }
    if [[ $mode == deploy ]] && ! [[ $tag =~ $TAG_RE && $tag != *$'\n'* ]]; then
        fail "invalid image tag '$tag': 1-128 letters, digits, '_', '.', '-', not starting with '.' or '-'"
    fi

    DR_HOME=${DR_HOME:-/srv/dr}
    SERVICE=${DR_SERVICE:-dr}
    READY_TIMEOUT=${DR_READY_TIMEOUT:-180}
    READY_INTERVAL=${DR_READY_INTERVAL:-5}
    local lock_timeout=${DR_LOCK_TIMEOUT:-900} ready_path=${DR_READY_PATH:-/readyz} port
    [[ $READY_TIMEOUT =~ ^[0-9]+$ ]] || fail "DR_READY_TIMEOUT must be whole seconds, not '$READY_TIMEOUT'"
    [[ $READY_INTERVAL =~ ^[0-9]+(\.[0-9]+)?$ ]] || fail "DR_READY_INTERVAL must be seconds, not '$READY_INTERVAL'"
    [[ $lock_timeout =~ ^[0-9]+$ ]] || fail "DR_LOCK_TIMEOUT must be whole seconds, not '$lock_timeout'"
    [[ $ready_path == /* ]] || fail "DR_READY_PATH must start with '/', not '$ready_path'"

    cd "$DR_HOME" 2>/dev/null || fail "cannot enter $DR_HOME (set DR_HOME, or run deploy/bootstrap.sh)"
    [[ -f compose.yml && -f .env ]] || fail "$DR_HOME has no compose.yml or no .env (deploy/bootstrap.sh --source puts them there)"
    [[ -w . ]] || fail "$DR_HOME is not writable by $(id -un)"

    # One deploy at a time: a second one waits here until the first has finished, rollback included.
    exec 9>>.deploy.lock
    if ! flock -n 9; then
        log "another deploy is running; waiting up to ${lock_timeout}s for it"
        flock -w "$lock_timeout" 9 || fail "another deploy still holds $DR_HOME/.deploy.lock after ${lock_timeout}s; nothing changed"
    fi

    docker compose version >/dev/null 2>&1 || fail "docker compose does not work for $(id -un) (is it in the docker group?)"
    port=${DR_METRICS_PORT:-$(env_get DR_METRICS_PORT)}
    port=${port:-9187}
    [[ $port =~ ^[0-9]+$ ]] || fail "DR_METRICS_PORT must be a port number, not '$port'"
    READY_URL="http://127.0.0.1:$port$ready_path"

    "$mode" "$tag"
}

main "$@"
