#!/bin/sh
# DEV ONLY: prepares dr in the try-out stack (compose/dev.yml, service dr-setup, run with the dr image's
# /bin/sh before the dr service starts). Idempotent; tests/it/compose_dev.rs runs it twice against a real Garage.
#
# 1. Generates the stack's age key with `dr keygen` into the dr-data volume, once: no private key is committed
#    to the repository, and each try-out encrypts to a key of its own. Removing the volume removes the key and
#    with it any way to read the backups made with it (which live in the garage-data volume).
# 2. Writes dr's configuration from the template (compose/dev/dr.toml), with @DEV_RECIPIENT@ replaced by the
#    key's public recipient.
# 3. Creates the repository (`dr init`) unless one is already there.
#
# Environment:
#   DR_DEV_DIR        where the key and the configuration go (default /var/lib/dr/dev)
#   DR_DEV_TEMPLATE   the template (default /etc/dr/dev/dr.toml)
#   DR_CONFIG         the configuration to write, which dr then reads (default $DR_DEV_DIR/dr.toml)
#   plus what dr itself needs to reach the repository (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).
set -eu

dev_dir=${DR_DEV_DIR:-/var/lib/dr/dev}
template=${DR_DEV_TEMPLATE:-/etc/dr/dev/dr.toml}
config=${DR_CONFIG:-$dev_dir/dr.toml}
identity=$dev_dir/identity.txt

log() { echo "dr-setup: $*" >&2; }

umask 077
mkdir -p "$dev_dir"

if [ -s "$identity" ]; then
    log "keeping the dev key $identity"
else
    dr keygen --output "$identity" >/dev/null
    log "generated the dev key $identity"
fi
# dr keygen writes the public recipient into the identity file as a comment.
recipient=$(sed -n 's/^# public key: \(age1[0-9a-z]*\)$/\1/p' "$identity")
[ -n "$recipient" ] || { log "no '# public key: age1...' line in $identity"; exit 1; }

grep -q '@DEV_RECIPIENT@' "$template" || { log "$template has no @DEV_RECIPIENT@ to replace"; exit 1; }
sed "s/@DEV_RECIPIENT@/$recipient/" "$template" >"$config.new"
mv "$config.new" "$config"
log "wrote $config (recipient $recipient)"

if dr --config "$config" --quiet snapshots >/dev/null 2>&1; then
    log "the repository exists"
else
    dr --config "$config" init
fi
