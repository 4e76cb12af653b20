#!/usr/bin/env bash
# Benchmark: continuous change capture and point-in-time restore (issue 15, docs/pitr.md).
#
# On a scratch PostgreSQL with wal_level = logical, a pgbench database (scale --scale) under a steady pgbench
# load (--clients, --seconds):
#   a. the load alone, then the load with `dr stream run` capturing (interval --interval): pgbench's TPS both
#      ways, and the CPU the capture's backend used on the server against all of pgbench's backends;
#   b. the RPO achieved: every second, the age of the newest stored point of the stream (its newest segment's or
#      head's covered_until), median and worst, against the goal of <= 10 s; and the WAL the slot kept;
#   c. the point-in-time restore: `dr restore --to latest --jobs 2` (the base + the replay of every change since),
#      its replay speed (changes per second), against `createdb + pg_restore -j2` of a pg_dump taken at the end.
# Prints a Markdown table. See docs/benchmarks.md.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib/common.sh
source "$ROOT/bench/lib/common.sh" # die, log, need, now, elapsed, median, ratio, ...
RPO_GOAL=10

SCALE=20
CLIENTS=4
SECONDS_LOAD=60
INTERVAL=5s
WORKDIR="$ROOT/bench/out-pitr"
DR_BIN=""
KEEP=0

usage() {
    cat <<EOF
Usage: bench/pitr.sh [options]

  --scale N        pgbench scale (default $SCALE: $((SCALE * 100000)) accounts)
  --clients N      pgbench clients (default $CLIENTS)
  --seconds N      length of each load run (default $SECONDS_LOAD)
  --interval D     [stream] interval (default $INTERVAL)
  --dr PATH        use this dr binary instead of building it (cargo build --release)
  --workdir DIR    where everything is created; removed at the end (default bench/out-pitr)
  --keep           keep the work directory
  -h, --help       this help

Environment: PG_BIN (PostgreSQL bin directory; default: the newest /usr/lib/postgresql/*/bin).
Needs: jq, python3.
EOF
}

while (($#)); do
    case "$1" in
    --scale) SCALE=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --seconds) SECONDS_LOAD=$2; shift 2 ;;
    --interval) INTERVAL=$2; shift 2 ;;
    --dr) DR_BIN=$2; shift 2 ;;
    --workdir) WORKDIR=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "bench: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done


for tool in jq python3; do command -v "$tool" >/dev/null || die "$tool is needed"; done
PG_BIN=${PG_BIN:-$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)}
[[ -x "$PG_BIN/pgbench" ]] || die "no pgbench in $PG_BIN"

if [[ -z "$DR_BIN" ]]; then
    log "building dr (release)"
    (cd "$ROOT" && cargo build --release --quiet)
    DR_BIN="$ROOT/target/release/dr"
fi

RUN_AS=()
if ((EUID == 0)); then RUN_AS=(runuser -u postgres --); fi
rm -rf "$WORKDIR"
mkdir -p "$WORKDIR"
WORKDIR=$(cd "$WORKDIR" && pwd)
DATA="$WORKDIR/pg"
SOCK="$WORKDIR/sock"
mkdir -p "$SOCK"
if ((EUID == 0)); then chown postgres "$WORKDIR" "$SOCK"; fi
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
CAPTURE_PID=""

cleanup() {
    if [[ -n "$CAPTURE_PID" ]]; then kill "$CAPTURE_PID" 2>/dev/null || true; wait "$CAPTURE_PID" 2>/dev/null || true; fi
    if [[ -f "$DATA/postmaster.pid" ]]; then "${RUN_AS[@]}" "$PG_BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null || true; fi
    if ((KEEP == 0)); then rm -rf "$WORKDIR"; fi
}
trap cleanup EXIT

log "starting PostgreSQL (wal_level = logical) on port $PORT"
"${RUN_AS[@]}" "$PG_BIN/initdb" -D "$DATA" -U postgres -A trust >/dev/null
"${RUN_AS[@]}" "$PG_BIN/pg_ctl" -D "$DATA" -w -l "$WORKDIR/pg.log" \
    -o "-k $SOCK -c listen_addresses='' -p $PORT -c wal_level=logical -c max_wal_size=4GB -c shared_buffers=256MB" \
    start >/dev/null
export PGHOST=$SOCK PGPORT=$PORT PGUSER=postgres
sql() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -At "$@"; }

log "pgbench -i -s $SCALE"
sql -c "CREATE DATABASE bench"
"$PG_BIN/pgbench" -q -i -s "$SCALE" bench >/dev/null 2>&1
# pgbench_history has no key: give it one, or its inserts could not be published (docs/pitr.md).
sql -d bench -c "ALTER TABLE pgbench_history ADD COLUMN id bigserial PRIMARY KEY"

IDENTITY="$WORKDIR/identity.txt"
"$DR_BIN" keygen --output "$IDENTITY" >/dev/null 2>&1
RECIPIENT=$(grep -o 'age1[0-9a-z]*' "$IDENTITY" | first_line)
CONFIG="$WORKDIR/dr.toml"
cat >"$CONFIG" <<EOF
[repository]
url = "file://$WORKDIR/repo"
[encryption]
recipients = ["$RECIPIENT"]
identity_file = "$IDENTITY"
[[postgres]]
name = "app"
url = "host=$SOCK port=$PORT user=postgres dbname=bench"
globals = false
continuous = true
[stream]
interval = "$INTERVAL"
EOF
dr() { "$DR_BIN" --config "$CONFIG" -q "$@"; }
dr init >/dev/null

backend_cpu() { # CPU seconds of the server backends whose application_name matches $1 (LIKE), summed
    local total=0 pid
    for pid in $(sql -d bench -c "SELECT pid FROM pg_stat_activity WHERE application_name LIKE '$1'"); do
        total=$(awk -v t="$total" -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", t + ($14 + $15) / hz }' "/proc/$pid/stat" 2>/dev/null || echo "$total")
    done
    echo "$total"
}

# pgbench's backends live only while it runs: their CPU is sampled at the end of the run, from within.
run_load() { # run_load LOGFILE: pgbench for SECONDS_LOAD s; prints its TPS
    "$PG_BIN/pgbench" -n -c "$CLIENTS" -j "$CLIENTS" -T "$SECONDS_LOAD" bench >"$1" 2>&1
    grep -oP 'tps = \K[0-9.]+' "$1" | first_line
}

log "a. load alone ($SECONDS_LOAD s, $CLIENTS clients)"
TPS_ALONE=$(run_load "$WORKDIR/pgbench-alone.log")

log "starting the capture, and its base backup"
dr stream run >"$WORKDIR/capture.log" 2>&1 &
CAPTURE_PID=$!
for _ in $(seq 100); do
    compgen -G "$WORKDIR/repo/streams/app/*/generation.json" >/dev/null && break
    sleep 0.1
done
dr backup >/dev/null
BASE_DONE=$(now)

log "a/b. load with the capture ($SECONDS_LOAD s), sampling the stream's RPO every second"
CAPTURE_CPU_0=$(backend_cpu 'dr capture')
python3 - "$WORKDIR/repo/streams/app" "$((SECONDS_LOAD + 2))" >"$WORKDIR/rpo.samples" <<'PY' &
import glob, json, os, sys, time
from datetime import datetime, timezone
root, seconds = sys.argv[1], int(sys.argv[2])
def covered():
    newest = None
    for path in glob.glob(os.path.join(root, "*", "segments", "*.json")) + glob.glob(os.path.join(root, "*", "head.json")):
        try:
            with open(path) as f:
                t = datetime.fromisoformat(json.load(f)["covered_until"].replace("Z", "+00:00"))
        except (OSError, ValueError, KeyError):
            continue
        newest = t if newest is None or t > newest else newest
    return newest
end = time.time() + seconds
while time.time() < end:
    c = covered()
    if c is not None:
        print(f"{(datetime.now(timezone.utc) - c).total_seconds():.3f}")
    time.sleep(1)
PY
SAMPLER=$!
(
    while kill -0 "$SAMPLER" 2>/dev/null; do
        sql -d bench -c "SELECT coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0)::bigint FROM pg_replication_slots"
        sleep 1
    done
) >"$WORKDIR/retained.samples" &
RETAINED=$!
PGBENCH_CPU_FILE="$WORKDIR/pgbench-cpu"
(
    # pgbench's backends, sampled just before the run ends (they exit with it).
    sleep $((SECONDS_LOAD - 1))
    backend_cpu 'pgbench' >"$PGBENCH_CPU_FILE"
) &
TPS_CAPTURED=$(run_load "$WORKDIR/pgbench-captured.log")
CAPTURE_CPU_1=$(backend_cpu 'dr capture')
wait "$SAMPLER" "$RETAINED" 2>/dev/null || true
LOAD_END=$(sql -d bench -c "SELECT clock_timestamp()")

CHANGES=$(jq -s '[.[].changes] | add' "$WORKDIR"/repo/streams/app/*/segments/*.json)
TRANSACTIONS=$(jq -s '[.[].transactions] | add' "$WORKDIR"/repo/streams/app/*/segments/*.json)
read -r RPO_MEDIAN RPO_WORST RPO_N < <(sort -g "$WORKDIR/rpo.samples" | awk '{ v[NR] = $1 } END { printf "%.1f %.1f %d\n", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2, v[NR], NR }')
RETAINED_MAX=$(sort -g "$WORKDIR/retained.samples" | tail -n 1)
CAPTURE_CPU=$(awk -v a="$CAPTURE_CPU_0" -v b="$CAPTURE_CPU_1" 'BEGIN { printf "%.2f", b - a }')
PGBENCH_CPU=$(cat "$PGBENCH_CPU_FILE" 2>/dev/null || echo 0)

log "waiting for the stream to pass the end of the load"
for _ in $(seq 120); do
    COVERED=$(jq -rs 'map(.covered_until) | max' "$WORKDIR"/repo/streams/app/*/segments/*.json "$WORKDIR"/repo/streams/app/*/head.json 2>/dev/null || true)
    [[ -n "$COVERED" && "$COVERED" > "$(date -u -d "$LOAD_END 2 seconds" +%Y-%m-%dT%H:%M:%S)" ]] && break
    sleep 1
done
kill "$CAPTURE_PID"; wait "$CAPTURE_PID" 2>/dev/null || true; CAPTURE_PID=""

log "c. dr restore --to latest --jobs 2 (base + replay)"
start=$(now)
dr restore --to latest --jobs 2 --into "app=host=$SOCK port=$PORT user=postgres dbname=pitr" --json >"$WORKDIR/restore.json"
DR_RESTORE=$(elapsed "$start" "$(now)")
REPLAY_SECONDS=$(jq '.sources[0].point_in_time.seconds' "$WORKDIR/restore.json")
REPLAYED=$(jq '.sources[0].point_in_time.changes' "$WORKDIR/restore.json")
REPLAY_RATE=$(awk -v c="$REPLAYED" -v s="$REPLAY_SECONDS" 'BEGIN { printf "%.0f", c / s }')

log "c. pg_dump at the end, then createdb + pg_restore -j2"
"$PG_BIN/pg_dump" -Fc -Z0 -f "$WORKDIR/end.dump" bench
start=$(now)
sql -c "CREATE DATABASE plain"
"$PG_BIN/pg_restore" -j 2 -d plain "$WORKDIR/end.dump"
PG_RESTORE=$(elapsed "$start" "$(now)")
for db in bench pitr plain; do
    sql -d "$db" -c "SELECT md5(string_agg(a::text, ',' ORDER BY aid)) FROM pgbench_accounts a" >"$WORKDIR/$db.digest"
done
cmp -s "$WORKDIR/bench.digest" "$WORKDIR/pitr.digest" || die "the point-in-time restore differs from the source"

cat <<EOF

Machine: $(nproc) CPUs, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo); $("$PG_BIN/postgres" --version); $("$DR_BIN" --version)
Run:     $(date -u +%Y-%m-%dT%H:%MZ), pgbench scale $SCALE, $CLIENTS clients, $SECONDS_LOAD s per load run, [stream] interval $INTERVAL

| measurement | value | target |
|---|---|---|
| pgbench TPS, load alone | $TPS_ALONE | |
| pgbench TPS, with the capture | $TPS_CAPTURED ($(ratio "$TPS_CAPTURED" "$TPS_ALONE")x) | |
| server CPU: the capture's backend / pgbench's backends | ${CAPTURE_CPU} s / ${PGBENCH_CPU} s | |
| changes captured (transactions) | $CHANGES ($TRANSACTIONS) | |
| RPO under load, median of $RPO_N samples | ${RPO_MEDIAN} s | <= $RPO_GOAL s: $(awk -v a="$RPO_MEDIAN" -v b="$RPO_GOAL" 'BEGIN { print (a <= b) ? "PASS" : "FAIL" }') |
| RPO under load, worst | ${RPO_WORST} s | <= $RPO_GOAL s: $(awk -v a="$RPO_WORST" -v b="$RPO_GOAL" 'BEGIN { print (a <= b) ? "PASS" : "FAIL" }') |
| WAL the slot kept, most | $(awk -v b="$RETAINED_MAX" 'BEGIN { printf "%.1f MiB", b / 1048576 }') | |
| dr restore --to latest --jobs 2 (base + replay) | ${DR_RESTORE} s | |
| of which replay: $REPLAYED changes | ${REPLAY_SECONDS} s, $REPLAY_RATE changes/s | |
| createdb + pg_restore -j2 of a pg_dump taken at the end | ${PG_RESTORE} s | |
| point-in-time restore / pg_restore of a dump at that time | $(ratio "$DR_RESTORE" "$PG_RESTORE") | (information) |
EOF
log "base backup took until $(date -d "@${BASE_DONE%.*}" +%H:%M:%S); the restored accounts equal the source's"
