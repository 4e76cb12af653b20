# Shared by bench/files.sh and bench/run.sh (sourced): a single-node Garage on loopback, as in
# tests/common/garage.rs, and a free port for it. The caller defines `die` and `log`, sets RUN (the work
# directory) and kills $GARAGE_PID on exit. Garage's /metrics endpoint (open without a token when none is
# configured) counts requests per S3 operation: `s3_puts`.
# shellcheck shell=bash disable=SC2034 # the variables it sets are the callers'

free_port() {
    local port
    for _ in $(seq 50); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    die "no free port found"
}

GARAGE=$(command -v garage || echo "${CARGO_HOME:-$HOME/.cargo}/bin/garage")
GARAGE_PID=""

garage_cli() { "$GARAGE" -c "$RUN/garage/garage.toml" "$@"; }

# start_garage: starts the server, makes bucket dr-bench and a key for it; sets GARAGE_S3_PORT,
# GARAGE_ADMIN_PORT, GARAGE_PID, S3_KEY_ID and S3_SECRET.
start_garage() {
    mkdir -p "$RUN/garage"
    GARAGE_S3_PORT=$(free_port)
    GARAGE_ADMIN_PORT=$(free_port)
    cat >"$RUN/garage/garage.toml" <<EOG
metadata_dir = "$RUN/garage/meta"
data_dir = "$RUN/garage/data"
db_engine = "sqlite"
replication_factor = 1
# dr's objects are encrypted: compressing them would only burn this machine's CPU (Garage's default is zstd level 1).
compression_level = "none"
rpc_bind_addr = "127.0.0.1:$(free_port)"
rpc_secret = "$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$GARAGE_S3_PORT"
root_domain = ".s3.garage.localhost"
[admin]
api_bind_addr = "127.0.0.1:$GARAGE_ADMIN_PORT"
EOG
    RUST_LOG=warn "$GARAGE" -c "$RUN/garage/garage.toml" server >"$RUN/garage/server.log" 2>&1 &
    GARAGE_PID=$!
    local node="" i
    for ((i = 0; i < 100; i++)); do
        node=$(garage_cli node id -q 2>/dev/null) && break
        sleep 0.2
    done
    [[ -n $node ]] || die "garage did not start: $(tail -n 5 "$RUN/garage/server.log")"
    garage_cli layout assign -z dc1 -c 100G "${node%%@*}" >/dev/null
    garage_cli layout apply --version 1 >/dev/null
    garage_cli bucket create dr-bench >/dev/null
    local key
    key=$(garage_cli key create dr-bench-key)
    S3_KEY_ID=$(awk '/^Key ID:/ { print $3 }' <<<"$key")
    S3_SECRET=$(awk '/^Secret key:/ { print $3 }' <<<"$key")
    garage_cli bucket allow --read --write --owner dr-bench --key dr-bench-key >/dev/null
    curl -fsS "http://127.0.0.1:$GARAGE_ADMIN_PORT/metrics" >/dev/null || die "garage's /metrics does not answer"
    log "garage on 127.0.0.1:$GARAGE_S3_PORT (metrics on $GARAGE_ADMIN_PORT)"
}

# s3_puts: the PUT-class requests so far (what S3 bills as PUT/POST: objects, multipart create/parts/complete,
# copies).
s3_puts() {
    curl -fsS "http://127.0.0.1:$GARAGE_ADMIN_PORT/metrics" | awk '
        /^api_s3_request_counter\{/ && /api_endpoint="(PutObject|CreateMultipartUpload|UploadPart|UploadPartCopy|CompleteMultipartUpload|CopyObject)"/ { s += $NF }
        END { printf "%d", s }'
}
