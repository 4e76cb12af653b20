#!/usr/bin/env bash
# Benchmark: dr backup/restore against the stock PostgreSQL tools, on a generated photo-sharing site.
#
# For each size it starts from one freshly generated database and times, interleaved and repeated:
#   a. pg_dump -Fc > file                                (the plain default: gzip inside pg_dump)
#   b. pg_dump -Fc -Z0 | zstd -3 -T0 | age -r KEY > file  (the shell pipeline dr replaces)
#   c. dr backup                                         (local repository, zstd level 3, threads 0)
#   d. createdb + pg_restore -j2 from the local -Z0 dump file
#   e. dr restore --jobs 2 --into app=<new database>
#   f. dr backup to S3 (a single-node Garage on loopback; skipped with --no-s3 or without garage)
#   g. dr drill --jobs 2 (the same snapshot into an embedded scratch cluster, then every check; --no-drill skips it)
#   h. dr restore --jobs 2 from the S3 repository that (f) wrote (skipped with f)
# and prints medians, ratios, output sizes, dr's peak RSS and PASS/FAIL against the targets of issues 2, 3 and
# 14, and the drill's RTO, its phases and its cost over dr restore.
# See docs/benchmarks.md. Run `bench/run.sh --help` for the options.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib/common.sh
source "$ROOT/bench/lib/common.sh" # die, log, need, now, elapsed, median, ratio, ...
BENCH="$ROOT/bench"

# Targets (issues 2, 3 and 14).
BACKUP_VS_PIPELINE_MAX=1.05
RESTORE_VS_PG_RESTORE_MAX=1.00
S3_VS_LOCAL_MAX=1.05
DRILL_RTO_VS_RESTORE_MAX=1.05
RSS_MAX_MIB=64

# Posts per GB (GiB, as pg_size_pretty counts) of pg_database_size, calibrated on bench/site.sql: about
# 6.9 KB of database per post, tables and indexes together.
POSTS_PER_GB=${POSTS_PER_GB:-155000}

SIZES="0.5,2"
REPS=3
JOBS=2
WORKDIR="$BENCH/out"
KEEP=0
DURABLE=0
DR_BIN=""
RESULTS=""
DRILL=1

usage() {
    cat <<EOF
Usage: bench/run.sh [options]

Generates a realistic photo-sharing database on a scratch PostgreSQL cluster and times pg_dump -Fc,
the pg_dump | zstd | age shell pipeline and dr backup; pg_restore -j2, dr restore --jobs 2 and
dr drill --jobs 2 (restore into an embedded scratch cluster, then every check).

Options:
  --sizes LIST     database sizes in GB (pg_database_size), comma-separated (default: $SIZES);
                   --sizes 0.05 is a quick smoke run
  --reps N         repetitions of every measurement; the median is reported (default: $REPS)
  --jobs N         parallel jobs of the restores and of the drill (default: $JOBS)
  --workdir DIR    where everything is created; removed at the end (default: bench/out)
  --keep           keep the work directory (dumps, repository, server log) for inspection
  --durable        run PostgreSQL with fsync/full_page_writes on (default: off, for steadier timings)
  --dr PATH        use this dr binary instead of building it (cargo build --release)
  --results FILE   also write the results table (Markdown) to FILE
  --no-s3          skip dr backup to S3 (a local Garage server; measured when garage is installed)
  --no-drill       skip dr drill
  -h, --help       this help

Environment: PG_BIN (PostgreSQL bin directory; default: the newest /usr/lib/postgresql/*/bin),
POSTS_PER_GB (generator scale, default $POSTS_PER_GB).
Needs: zstd, age, GNU time (/usr/bin/time), jq (for dr's JSON reports); installed with apt-get when run
as root.
EOF
}

while (($#)); do
    case $1 in
        --sizes) SIZES=${2:?--sizes needs a value}; shift 2 ;;
        --reps) REPS=${2:?--reps needs a value}; shift 2 ;;
        --jobs) JOBS=${2:?--jobs needs a value}; shift 2 ;;
        --workdir) WORKDIR=${2:?--workdir needs a value}; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --durable) DURABLE=1; shift ;;
        --dr) DR_BIN=${2:?--dr needs a value}; shift 2 ;;
        --results) RESULTS=${2:?--results needs a value}; shift 2 ;;
        --no-s3) S3=0; shift ;;
        --no-drill) DRILL=0; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done

[[ $REPS =~ ^[1-9][0-9]*$ ]] || die "--reps must be a positive integer"
[[ $JOBS =~ ^[1-9][0-9]*$ ]] || die "--jobs must be a positive integer"
IFS=, read -r -a SIZE_LIST <<<"$SIZES"
((${#SIZE_LIST[@]})) || die "--sizes is empty"
for size in "${SIZE_LIST[@]}"; do
    [[ $size =~ ^[0-9]*\.?[0-9]+$ ]] || die "--sizes: $size is not a number of GB"
done

# ---------------------------------------------------------------------------------------------------------
# Tools


need zstd zstd
need age age
[[ -x /usr/bin/time ]] || need /usr/bin/time time
need jq jq
[[ -n $DR_BIN ]] || command -v cargo >/dev/null 2>&1 || die "cargo is missing (or pass --dr PATH)"

if [[ -z ${PG_BIN:-} ]]; then
    PG_BIN=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
    [[ -n $PG_BIN ]] || PG_BIN=$(dirname "$(command -v pg_dump 2>/dev/null || echo /nonexistent/pg_dump)")
fi
for tool in initdb pg_ctl postgres pg_dump pg_restore psql createdb dropdb; do
    [[ -x $PG_BIN/$tool ]] || die "$PG_BIN/$tool not found (set PG_BIN to the PostgreSQL bin directory)"
done

# PostgreSQL refuses to run as root: the server then runs as the postgres user (clients stay root).
AS_SERVER=()
if ((EUID == 0)); then
    id postgres >/dev/null 2>&1 || die "running as root needs a 'postgres' system user to run the server"
    AS_SERVER=(runuser -u postgres --)
fi

# ---------------------------------------------------------------------------------------------------------
# Work directory and cleanup

PGDATA=""
POLL_PID=""
MEASURED_PID="" # GNU time, while it runs a dr command
# shellcheck source=bench/lib/workdir.sh
source "$ROOT/bench/lib/workdir.sh"
make_run_dir run
chmod 711 "$RUN" # the server's user must reach its directory inside
# shellcheck source=bench/lib/garage.sh
source "$ROOT/bench/lib/garage.sh"

stop_server() {
    [[ -n $PGDATA && -f $PGDATA/postmaster.pid ]] || return 0
    if ! "${AS_SERVER[@]}" "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w -t 60 stop >/dev/null 2>&1; then
        local pid
        pid=$(head -n 1 "$PGDATA/postmaster.pid" 2>/dev/null || true)
        if [[ -n $pid ]]; then
            kill -QUIT "$pid" 2>/dev/null || true
        fi
    fi
}

# A dr drill cleans its scratch cluster up itself, also on SIGTERM; this is for one that was killed outright.
stop_drill_scratch() {
    local pid_file pid
    for pid_file in "$RUN"/tmp/dr-scratch-*/data/postmaster.pid; do
        [[ -f $pid_file ]] || continue
        log "stopping a scratch cluster a drill left behind: ${pid_file%/postmaster.pid}"
        if ! "${AS_SERVER[@]}" "$PG_BIN/pg_ctl" -D "${pid_file%/postmaster.pid}" -m immediate -w -t 30 stop \
            >/dev/null 2>&1; then
            pid=$(head -n 1 "$pid_file" 2>/dev/null || true)
            if [[ -n $pid ]]; then kill -QUIT "$pid" 2>/dev/null || true; fi
        fi
    done
}

# Called by workdir.sh's clean-up, before it stops Garage and removes the run's directory.
before_cleanup() {
    if [[ -n $POLL_PID ]]; then kill "$POLL_PID" 2>/dev/null || true; fi
    if [[ -n $MEASURED_PID ]]; then
        # Interrupted mid-measurement: let dr stop cleanly (a drill stops its scratch cluster on SIGTERM).
        local dr_pid="" i
        read -r dr_pid _ <"/proc/$MEASURED_PID/task/$MEASURED_PID/children" 2>/dev/null || true
        if [[ -n $dr_pid ]]; then kill -TERM "$dr_pid" 2>/dev/null || true; fi
        for ((i = 0; i < 300; i++)); do
            [[ -d /proc/$MEASURED_PID ]] || break
            sleep 0.1
        done
        wait "$MEASURED_PID" 2>/dev/null || true
    fi
    stop_drill_scratch
    stop_server
}

# ---------------------------------------------------------------------------------------------------------
# Helpers

le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a <= b) }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
human() { awk -v b="$1" 'BEGIN { split("B KiB MiB GiB TiB", u); i = 1; while (b >= 1024 && i < 5) { b /= 1024; i++ } printf "%.1f %s", b, u[i] }'; }
file_bytes() { stat -c %s "$1"; }
dir_bytes() { du -sb "$1" | cut -f 1; }
max() { if (($1 > $2)); then echo "$1"; else echo "$2"; fi; }
largest() { printf '%s\n' "$@" | sort -n | tail -n 1; } # of the integers given
pass() { if le "$1" "$2"; then echo PASS; else echo FAIL; fi; }

drop_db() { PGOPTIONS='-c client_min_messages=warning' "$PG_BIN/dropdb" --if-exists "$1"; }
sql() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -At "$@"; }

# Runs "$@" (a dr command) under GNU time; sets LAST_RSS_KB (time's %M: the peak RSS of dr and, as the
# kernel reports it, of any child it waited for) and LAST_OWN_KB (dr's own VmHWM, sampled every 0.1 s).
measure_rss() {
    local time_out="$RUN/time.out" hwm_file="$RUN/hwm.out"
    rm -f "$hwm_file"
    /usr/bin/time -f '%M' -o "$time_out" "$@" &
    local time_pid=$!
    MEASURED_PID=$time_pid
    (
        # Reads /proc with builtins only, so the sampler itself costs next to nothing.
        pid="" hwm=0
        exec {tick}<> <(:)
        while [[ -d /proc/$time_pid ]]; do
            if [[ -z $pid ]]; then
                # The file has no trailing newline: read assigns, then reports end of file.
                read -r pid _ <"/proc/$time_pid/task/$time_pid/children" 2>/dev/null || true
            fi
            if [[ -n $pid && -r /proc/$pid/status ]]; then
                while read -r key value _; do
                    [[ $key == VmHWM: ]] && ((value > hwm)) && hwm=$value
                done <"/proc/$pid/status" 2>/dev/null || true
                echo "$hwm" >"$hwm_file"
            fi
            read -r -t 0.1 -u "$tick" || true
        done
    ) &
    POLL_PID=$!
    local status=0
    wait "$time_pid" || status=$?
    MEASURED_PID=""
    wait "$POLL_PID" 2>/dev/null || true
    POLL_PID=""
    if ((status != 0)); then
        cat "$time_out" >&2
        return "$status"
    fi
    LAST_RSS_KB=$(tail -n 1 "$time_out")
    LAST_OWN_KB=$(cat "$hwm_file" 2>/dev/null || echo 0)
}

# ---------------------------------------------------------------------------------------------------------
# Build dr

prepare_dr

# ---------------------------------------------------------------------------------------------------------
# Scratch PostgreSQL

PGROOT="$RUN/pg"
PGDATA="$PGROOT/data"
SOCK="$PGROOT/socket"
PORT=$(free_port)
mkdir -p "$SOCK"
if ((EUID == 0)); then
    chown -R postgres:postgres "$PGROOT"
    "${AS_SERVER[@]}" test -w "$PGROOT" || die "the postgres user cannot write to $PGROOT (check the permissions of its parents or use --workdir)"
fi

log "starting PostgreSQL ($PG_BIN) in $PGROOT, port $PORT"
"${AS_SERVER[@]}" "$PG_BIN/initdb" -D "$PGDATA" -U postgres --auth=trust --encoding=UTF8 --locale=C --no-sync \
    >"$RUN/initdb.log" 2>&1 || { cat "$RUN/initdb.log" >&2; die "initdb failed"; }
{
    echo "listen_addresses = ''"
    echo "unix_socket_directories = '$SOCK'"
    echo "port = $PORT"
    echo "max_connections = 50"
    echo "shared_buffers = 512MB"
    echo "work_mem = 32MB"
    echo "maintenance_work_mem = 256MB"
    echo "max_wal_size = 8GB"
    echo "checkpoint_timeout = 30min"
    # Background autovacuum/analyze of a just-restored database would land inside the next measurement.
    echo "autovacuum = off"
    if ((!DURABLE)); then
        echo "fsync = off"
        echo "synchronous_commit = off"
        echo "full_page_writes = off"
    fi
} >>"$PGDATA/postgresql.conf"
"${AS_SERVER[@]}" "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$PGROOT/server.log" -w -t 120 start >/dev/null \
    || { cat "$PGROOT/server.log" >&2; die "PostgreSQL did not start"; }

export PGHOST="$SOCK" PGPORT="$PORT" PGUSER=postgres
unset PGDATABASE PGPASSWORD PGSERVICE PGOPTIONS
conninfo() { echo "host=$SOCK port=$PORT user=postgres dbname=$1"; }

PG_VERSION=$(sql -d postgres -c "SHOW server_version")

# ---------------------------------------------------------------------------------------------------------
# Key pair, configuration, repository

RECIPIENT=$("$DR" keygen --output "$RUN/identity.txt" 2>/dev/null)
[[ $RECIPIENT == age1* ]] || die "dr keygen printed no recipient"
CONFIG="$RUN/dr.toml"
REPO="$RUN/repo"
mkdir -p "$RUN/tmp" "$RUN/out"
cat >"$CONFIG" <<EOF
[repository]
url = "file://$REPO"

[encryption]
recipients = ["$RECIPIENT"]
identity_file = "$RUN/identity.txt"

[compression]
level = 3
threads = 0

# dr drill's scratch cluster, restored files and staged archive (dr restore gets --temp-dir, the same).
[restore]
temp_dir = "$RUN/tmp"

[[postgres]]
name = "app"
url = "$(conninfo app)"
globals = false
EOF

# ---------------------------------------------------------------------------------------------------------
# S3: a single-node Garage on loopback (bench/lib/garage.sh).

if ((${S3:-1})) && [[ ! -x $GARAGE ]]; then
    log "garage not found: the S3 measurement is skipped (tests/run installs it)"
    S3=0
fi
S3=${S3:-1}
S3_RUNS=0
# A config like the local one, with a fresh prefix in the bucket for every run.
fresh_s3_repo() {
    S3_RUNS=$((S3_RUNS + 1))
    sed "s|^url = \"file://.*\"|url = \"s3://dr-bench/run-$S3_RUNS\"\nendpoint = \"http://127.0.0.1:$GARAGE_S3_PORT\"\nregion = \"garage\"|" \
        "$CONFIG" >"$RUN/dr-s3.toml"
    "${DR_S3[@]}" init >/dev/null
}
if ((S3)); then
    start_garage
    # dr with the bucket's key in its environment (never in the config), as a plain command for GNU time.
    DR_S3=(env "AWS_ACCESS_KEY_ID=$S3_KEY_ID" "AWS_SECRET_ACCESS_KEY=$S3_SECRET" AWS_EC2_METADATA_DISABLED=true
        AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null "$DR" --config "$RUN/dr-s3.toml" -q)
fi

# CPU seconds Garage has used so far: on this machine it shares the CPUs with dr, so it is reported beside the
# S3 measurements.
garage_cpu() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$GARAGE_PID/stat"; }

fresh_repo() {
    rm -rf "$REPO"
    "$DR" --config "$CONFIG" -q init >/dev/null
}

# ---------------------------------------------------------------------------------------------------------
# The measurements. Each sets LAST_SECONDS (wall time) and LAST_BYTES (output size).

OUT="$RUN/out"

run_pg_dump() {
    rm -f "$OUT/plain.dump"
    sync
    local t0 t1
    t0=$(now)
    "$PG_BIN/pg_dump" -Fc -d app -f "$OUT/plain.dump"
    t1=$(now)
    LAST_SECONDS=$(elapsed "$t0" "$t1")
    LAST_BYTES=$(file_bytes "$OUT/plain.dump")
}

run_pipeline() {
    rm -f "$OUT/pipeline.dump.zst.age"
    sync
    local t0 t1
    t0=$(now)
    "$PG_BIN/pg_dump" -Fc -Z0 -d app | zstd -q -3 -T0 | age -r "$RECIPIENT" >"$OUT/pipeline.dump.zst.age"
    t1=$(now)
    LAST_SECONDS=$(elapsed "$t0" "$t1")
    LAST_BYTES=$(file_bytes "$OUT/pipeline.dump.zst.age")
    # Not part of the pipeline's time: what making its output durable would add (dr fsyncs every object).
    t0=$(now)
    sync "$OUT/pipeline.dump.zst.age"
    t1=$(now)
    LAST_FSYNC=$(elapsed "$t0" "$t1")
}

run_dr_backup() {
    fresh_repo
    sync
    local t0 t1
    t0=$(now)
    measure_rss "$DR" --config "$CONFIG" -q backup >"$RUN/snapshot.id"
    t1=$(now)
    LAST_SECONDS=$(elapsed "$t0" "$t1")
    LAST_BYTES=$(dir_bytes "$REPO/objects")
}

run_dr_backup_s3() {
    fresh_s3_repo
    sync
    local t0 t1 g0
    g0=$(garage_cpu)
    t0=$(now)
    measure_rss "${DR_S3[@]}" backup >"$RUN/snapshot-s3.id"
    t1=$(now)
    LAST_SECONDS=$(elapsed "$t0" "$t1")
    LAST_GARAGE_CPU=$(awk -v a="$g0" -v b="$(garage_cpu)" 'BEGIN { printf "%.2f", b - a }')
}

# dr restore from the S3 repository of this repetition's run_dr_backup_s3 (the same database, backed up then).
run_dr_restore_s3() {
    drop_db restore_s3
    sync
    local t0 t1 g0
    g0=$(garage_cpu)
    t0=$(now)
    measure_rss "${DR_S3[@]}" restore --to latest --into "app=$(conninfo restore_s3)" --jobs "$JOBS" \
        --temp-dir "$RUN/tmp" >/dev/null
    t1=$(now)
    LAST_SECONDS=$(elapsed "$t0" "$t1")
    LAST_GARAGE_CPU=$(awk -v a="$g0" -v b="$(garage_cpu)" 'BEGIN { printf "%.2f", b - a }')
}

run_pg_restore() {
    drop_db restore_pg
    sync
    local t0 t1
    t0=$(now)
    "$PG_BIN/createdb" restore_pg
    "$PG_BIN/pg_restore" -j "$JOBS" -d restore_pg "$OUT/z0.dump"
    t1=$(now)
    LAST_SECONDS=$(elapsed "$t0" "$t1")
    LAST_BYTES=$(sql -d postgres -c "SELECT pg_database_size('restore_pg')")
}

run_dr_restore() { # run_dr_restore FILE (its JSON report, with the phases to compare with the drill's)
    drop_db restore_dr
    sync
    local t0 t1
    t0=$(now)
    measure_rss "$DR" --config "$CONFIG" -q restore --to latest --into "app=$(conninfo restore_dr)" \
        --jobs "$JOBS" --temp-dir "$RUN/tmp" --json >"$1"
    t1=$(now)
    LAST_SECONDS=$(elapsed "$t0" "$t1")
    LAST_BYTES=$(sql -d postgres -c "SELECT pg_database_size('restore_dr')")
}

# dr drill of the latest snapshot (the one dr restore restores) into an embedded scratch cluster, with every
# check. The record (--json) goes to FILE; TMPDIR too points into the work directory, for anything that does
# not follow [restore] temp_dir. A drill that does not pass stops the benchmark, naming the failed checks.
run_dr_drill() { # run_dr_drill FILE
    sync
    local t0 t1 status=0
    t0=$(now)
    measure_rss env TMPDIR="$RUN/tmp" "$DR" --config "$CONFIG" -q drill --jobs "$JOBS" --json >"$1" || status=$?
    t1=$(now)
    if ((status != 0)) || [[ $(jq -r '.passed' "$1" 2>/dev/null) != true ]]; then
        jq -r '"reason: \(.reason)", (.checks[] | select(.status != "pass") | "  \(.status) \(.name): \(.detail)")' \
            "$1" >&2 2>/dev/null || true
        die "dr drill did not pass (exit status $status)"
    fi
    # Clean-up is the drill's own job: nothing of it may be left in the temporary directory.
    local left
    left=$(find "$RUN/tmp" -mindepth 1 -maxdepth 1 -print -quit)
    [[ -z $left ]] || die "dr drill left $left behind"
    LAST_SECONDS=$(elapsed "$t0" "$t1")
}
# Seconds of one phase of a drill record (0 when absent), and the other figures of it.
drill_phase() { awk -v s="$(jq -r --arg name "$2" '[.phases[] | select(.name == $name) | .seconds] | add // 0' "$1")" 'BEGIN { printf "%.3f", s }'; }
drill_rto() { awk -v s="$(jq -r '.rto.seconds // 0' "$1")" 'BEGIN { printf "%.3f", s }'; }
drill_start() { awk -v s="$(jq -r '.scratch.start_seconds' "$1")" 'BEGIN { printf "%.3f", s }'; }
drill_phases() { jq -r '.phases[].name' "$1"; }
# The same for a dr restore --json report: one phase summed over the sources.
restore_phase() { awk -v s="$(jq -r --arg name "$2" '[.sources[].phases[] | select(.name == $name) | .seconds] | add // 0' "$1")" 'BEGIN { printf "%.3f", s }'; }
# The index (0-based) of the run at the median of the values given (the lower middle one for an even count).
median_index() { local i=0 v; for v in "$@"; do echo "$v $((i++))"; done | sort -g | awk '{ i[NR] = $2 } END { print i[int((NR + 1) / 2)] }'; }

# Row counts and a digest of every table, to check that both restores are complete.
DIGEST_SQL="SELECT string_agg(t || ':' || n || ':' || d, ' ' ORDER BY t) FROM (
  SELECT 'users' AS t, count(*) AS n, md5(string_agg(md5(x::text), '' ORDER BY id)) AS d FROM users x
  UNION ALL SELECT 'posts', count(*), md5(string_agg(md5(x::text), '' ORDER BY id)) FROM posts x
  UNION ALL SELECT 'comments', count(*), md5(string_agg(md5(x::text), '' ORDER BY id)) FROM comments x
  UNION ALL SELECT 'likes', count(*), md5(string_agg(md5(x::text), '' ORDER BY post_id, user_id)) FROM likes x
  UNION ALL SELECT 'follows', count(*), md5(string_agg(md5(x::text), '' ORDER BY follower_id, followee_id))
            FROM follows x) AS s"

check_restored() { # check_restored DBNAME LABEL
    local got
    got=$(sql -d "$1" -c "$DIGEST_SQL")
    [[ $got == "$SOURCE_DIGEST" ]] || die "$2 restored different data:
  source:   $SOURCE_DIGEST
  restored: $got"
}

# ---------------------------------------------------------------------------------------------------------
# Main loop

MACHINE=$(machine)
TOOLS="PostgreSQL $PG_VERSION; $(zstd --version | sed -n 's/.*\(v[0-9.]*\).*/zstd \1/p'); age $(age --version); $DR_VERSION"
LOAD_START=$(cut -d ' ' -f 1-3 /proc/loadavg)
log "machine: $MACHINE; load average: $LOAD_START"
log "tools: $TOOLS"
log "sizes: $SIZES GB; $REPS repetitions; restore jobs: $JOBS; fsync: $( ((DURABLE)) && echo on || echo off)"

TABLE=()

for size in "${SIZE_LIST[@]}"; do
    posts=$(awk -v s="$size" -v p="$POSTS_PER_GB" 'BEGIN { printf "%d", s * p + 0.5 }')
    ((posts >= 200)) || posts=200
    log "== $size GB: generating the site ($posts posts)"
    drop_db app
    "$PG_BIN/createdb" app
    t0=$(now)
    sql -d app -v posts="$posts" -f "$BENCH/site.sql" >/dev/null
    sql -d app -c "CHECKPOINT" >/dev/null
    t1=$(now)
    db_bytes=$(sql -d postgres -c "SELECT pg_database_size('app')")
    rows=$(sql -d app -c "SELECT (SELECT count(*) FROM users) || ' users, ' || (SELECT count(*) FROM posts) || ' posts, '
        || (SELECT count(*) FROM comments) || ' comments, ' || (SELECT count(*) FROM likes) || ' likes, '
        || (SELECT count(*) FROM follows) || ' follows'")
    log "generated $(human "$db_bytes") in $(elapsed "$t0" "$t1") s: $rows"
    SOURCE_DIGEST=$(sql -d app -c "$DIGEST_SQL")

    # Warm-up (not timed): reads the whole database once into the page cache, writes the -Z0 archive that
    # pg_restore reads, and runs dr once.
    log "warm-up"
    "$PG_BIN/pg_dump" -Fc -Z0 -d app -f "$OUT/z0.dump"
    z0_bytes=$(file_bytes "$OUT/z0.dump")
    run_dr_backup

    ((S3)) && run_dr_backup_s3
    declare -a T_A=() T_B=() T_BS=() T_C=() T_D=() T_E=() T_F=() RSS_C=() RSS_E=() RSS_F=() OWN_C=() OWN_E=() OWN_F=()
    declare -a T_G=() RTO_G=() RSS_G=() OWN_G=() JSON_G=() JSON_E=() T_H=() RSS_H=() OWN_H=() GCPU_F=() GCPU_H=()
    for ((rep = 0; rep < REPS; rep++)); do
        # Interleaved, and the order rotates from one repetition to the next so no tool always goes first.
        backups=(a b c)
        ((S3)) && backups+=(f)
        n=${#backups[@]}
        order=("${backups[@]:rep % n}" "${backups[@]:0:rep % n}")
        # The restores (and the drill) follow the backups, so they all restore the snapshot of this repetition.
        restores=(d e)
        ((S3)) && restores+=(h)
        ((DRILL)) && restores+=(g)
        n=${#restores[@]}
        order+=("${restores[@]:rep % n}" "${restores[@]:0:rep % n}")
        for m in "${order[@]}"; do
            case $m in
                a)
                    run_pg_dump
                    T_A+=("$LAST_SECONDS"); BYTES_A=$LAST_BYTES
                    log "rep $((rep + 1)): pg_dump -Fc            $LAST_SECONDS s" ;;
                b)
                    run_pipeline
                    T_B+=("$LAST_SECONDS"); BYTES_B=$LAST_BYTES
                    T_BS+=("$(awk -v a="$LAST_SECONDS" -v b="$LAST_FSYNC" 'BEGIN { printf "%.3f", a + b }')")
                    log "rep $((rep + 1)): pg_dump|zstd|age       $LAST_SECONDS s (then fsync $LAST_FSYNC s)" ;;
                c)
                    run_dr_backup
                    T_C+=("$LAST_SECONDS"); BYTES_C=$LAST_BYTES
                    RSS_C+=("$LAST_RSS_KB"); OWN_C+=("$LAST_OWN_KB")
                    log "rep $((rep + 1)): dr backup              $LAST_SECONDS s, peak RSS $(mib "$LAST_RSS_KB") MiB (own $(mib "$LAST_OWN_KB"))" ;;
                f)
                    run_dr_backup_s3
                    T_F+=("$LAST_SECONDS")
                    RSS_F+=("$LAST_RSS_KB"); OWN_F+=("$LAST_OWN_KB"); GCPU_F+=("$LAST_GARAGE_CPU")
                    log "rep $((rep + 1)): dr backup to S3        $LAST_SECONDS s, peak RSS $(mib "$LAST_RSS_KB") MiB (own $(mib "$LAST_OWN_KB")); Garage CPU $LAST_GARAGE_CPU s" ;;
                h)
                    run_dr_restore_s3
                    T_H+=("$LAST_SECONDS")
                    RSS_H+=("$LAST_RSS_KB"); OWN_H+=("$LAST_OWN_KB"); GCPU_H+=("$LAST_GARAGE_CPU")
                    log "rep $((rep + 1)): dr restore from S3     $LAST_SECONDS s, peak RSS $(mib "$LAST_RSS_KB") MiB (own $(mib "$LAST_OWN_KB")); Garage CPU $LAST_GARAGE_CPU s"
                    ((rep)) || check_restored restore_s3 "dr restore from S3"
                    "$PG_BIN/dropdb" restore_s3 ;;
                d)
                    run_pg_restore
                    T_D+=("$LAST_SECONDS")
                    log "rep $((rep + 1)): pg_restore -j$JOBS          $LAST_SECONDS s"
                    ((rep)) || check_restored restore_pg "pg_restore"
                    "$PG_BIN/dropdb" restore_pg ;;
                e)
                    json="$RUN/restore-$size-$rep.json"
                    run_dr_restore "$json"
                    T_E+=("$LAST_SECONDS"); JSON_E+=("$json")
                    RSS_E+=("$LAST_RSS_KB"); OWN_E+=("$LAST_OWN_KB")
                    log "rep $((rep + 1)): dr restore --jobs $JOBS    $LAST_SECONDS s ($(jq -r '[.sources[].phases[] | "\(.name) \(.seconds * 1000 | floor / 1000)"] | join(", ")' "$json")), peak RSS $(mib "$LAST_RSS_KB") MiB (own $(mib "$LAST_OWN_KB"))"
                    ((rep)) || check_restored restore_dr "dr restore"
                    "$PG_BIN/dropdb" restore_dr ;;
                g)
                    json="$RUN/drill-$size-$rep.json"
                    run_dr_drill "$json"
                    T_G+=("$LAST_SECONDS"); RTO_G+=("$(drill_rto "$json")"); JSON_G+=("$json")
                    RSS_G+=("$LAST_RSS_KB"); OWN_G+=("$LAST_OWN_KB")
                    log "rep $((rep + 1)): dr drill --jobs $JOBS      $LAST_SECONDS s (RTO ${RTO_G[-1]} s: $(jq -r '[.phases[] | "\(.name) \(.seconds * 1000 | floor / 1000)"] | join(", ")' "$json"); scratch start $(drill_start "$json") s), peak RSS $(mib "$LAST_RSS_KB") MiB (own $(mib "$LAST_OWN_KB"))"
                    ((rep)) || log "       drill checks: $(jq -r '[.checks[] | "\(.name) \(.status)"] | join(", ")' "$json"); $(jq -r '.checks[] | select(.name | startswith("row counts")) | .detail' "$json")" ;;
            esac
        done
    done

    a=$(median "${T_A[@]}"); b=$(median "${T_B[@]}"); bs=$(median "${T_BS[@]}"); c=$(median "${T_C[@]}")
    d=$(median "${T_D[@]}"); e=$(median "${T_E[@]}")
    rss_c=$(largest "${RSS_C[@]}"); own_c=$(largest "${OWN_C[@]}")
    rss_e=$(largest "${RSS_E[@]}"); own_e=$(largest "${OWN_E[@]}")
    r_cb=$(ratio "$c" "$b"); r_cbs=$(ratio "$c" "$bs"); r_ca=$(ratio "$c" "$a"); r_ed=$(ratio "$e" "$d")
    rss_limit_kb=$((RSS_MAX_MIB * 1024))
    label="$size GB ($(human "$db_bytes"))"
    TABLE+=(
        "| $label | pg_dump -Fc | $a | ${T_A[*]} | $(human "$BYTES_A") | | |"
        "| $label | pg_dump -Fc -Z0 \\| zstd -3 -T0 \\| age | $b | ${T_B[*]} | $(human "$BYTES_B") | | |"
        "| $label | (the pipeline, then fsync of its output) | $bs | ${T_BS[*]} | | | |"
        "| $label | dr backup | $c | ${T_C[*]} | $(human "$BYTES_C") | $(mib "$rss_c") ($(mib "$own_c")) | $(pass "$(max "$rss_c" "$own_c")" "$rss_limit_kb") |"
        "| $label | (pg_dump -Fc -Z0 archive, the restore input) | | | $(human "$z0_bytes") | | |"
        "| $label | createdb + pg_restore -j$JOBS | $d | ${T_D[*]} | | | |"
        "| $label | dr restore --jobs $JOBS | $e | ${T_E[*]} | | $(mib "$rss_e") ($(mib "$own_e")) | $(pass "$(max "$rss_e" "$own_e")" "$rss_limit_kb") |"
        "| $label | **dr backup / pipeline** | **$r_cb** | target ≤ $BACKUP_VS_PIPELINE_MAX | | | **$(pass "$r_cb" "$BACKUP_VS_PIPELINE_MAX")** |"
        "| $label | dr backup / (pipeline + fsync) | $r_cbs | (information) | | | |"
        "| $label | dr backup / pg_dump -Fc | $r_ca | (information) | | | |"
        "| $label | **dr restore / pg_restore -j$JOBS** | **$r_ed** | target ≤ $RESTORE_VS_PG_RESTORE_MAX | | | **$(pass "$r_ed" "$RESTORE_VS_PG_RESTORE_MAX")** |"
    )
    if ((S3)); then
        f=$(median "${T_F[@]}"); r_fc=$(ratio "$f" "$c")
        rss_f=$(largest "${RSS_F[@]}"); own_f=$(largest "${OWN_F[@]}")
        TABLE+=(
            "| $label | dr backup to S3 (Garage on loopback) | $f | ${T_F[*]} | | $(mib "$rss_f") ($(mib "$own_f")) | $(pass "$(max "$rss_f" "$own_f")" "$rss_limit_kb") |"
            "| $label | **dr backup S3 / local** | **$r_fc** | target ≤ $S3_VS_LOCAL_MAX | | | **$(pass "$r_fc" "$S3_VS_LOCAL_MAX")** |"
            "| $label | dr backup S3 / pipeline | $(ratio "$f" "$b") | (information) | | | |"
            "| $label | (Garage's own CPU during dr backup to S3, median) | $(median "${GCPU_F[@]}") | ${GCPU_F[*]} | | | |"
        )
        h=$(median "${T_H[@]}"); r_hd=$(ratio "$h" "$d")
        rss_h=$(largest "${RSS_H[@]}"); own_h=$(largest "${OWN_H[@]}")
        TABLE+=(
            "| $label | dr restore --jobs $JOBS from S3 | $h | ${T_H[*]} | | $(mib "$rss_h") ($(mib "$own_h")) | $(pass "$(max "$rss_h" "$own_h")" "$rss_limit_kb") |"
            "| $label | **dr restore from S3 / pg_restore -j$JOBS** | **$r_hd** | target ≤ $RESTORE_VS_PG_RESTORE_MAX | | | **$(pass "$r_hd" "$RESTORE_VS_PG_RESTORE_MAX")** |"
            "| $label | dr restore from S3 / from local | $(ratio "$h" "$e") | (information) | | | |"
            "| $label | (Garage's own CPU during dr restore from S3, median) | $(median "${GCPU_H[@]}") | ${GCPU_H[*]} | | | |"
        )
    fi
    if ((DRILL)); then
        g=$(median "${T_G[@]}"); rto=$(median "${RTO_G[@]}")
        rss_g=$(largest "${RSS_G[@]}"); own_g=$(largest "${OWN_G[@]}")
        # The phases of the median drill (by wall time), with every run's figure beside them.
        mid=$(median_index "${T_G[@]}")
        mid_json=${JSON_G[mid]}
        phase_runs() { local j; for j in "${JSON_G[@]}"; do "$1" "$j" "${2:-}"; echo; done | paste -sd ' '; } # FIGURE [PHASE]
        TABLE+=(
            "| $label | dr drill --jobs $JOBS (wall) | $g | ${T_G[*]} | | $(mib "$rss_g") ($(mib "$own_g")) | $(pass "$own_g" "$rss_limit_kb") |"
            "| $label | dr drill RTO (first byte fetched to end of checks) | $rto | ${RTO_G[*]} | | | |"
        )
        while read -r phase; do
            TABLE+=("| $label | · phase $phase (median drill: run $((mid + 1))) | $(drill_phase "$mid_json" "$phase") | $(phase_runs drill_phase "$phase") | | | |")
        done < <(drill_phases "$mid_json")
        planning=$(awk -v r="$(drill_rto "$mid_json")" -v p="$(jq -r '[.phases[].seconds] | add // 0' "$mid_json")" 'BEGIN { printf "%.3f", r - p }')
        outside=$(awk -v w="${T_G[mid]}" -v r="$(drill_rto "$mid_json")" -v s="$(drill_start "$mid_json")" 'BEGIN { printf "%.3f", w - r - s }')
        # The same restore phases of the median dr restore, on the bench's server (the drill's go to its scratch).
        mid_e=$(median_index "${T_E[@]}")
        restore_runs() { local j; for j in "${JSON_E[@]}"; do restore_phase "$j" "$1"; echo; done | paste -sd ' '; }
        TABLE+=(
            "| $label | · in the RTO, outside the phases (planning) | $planning | | | | |"
            "| $label | · scratch start (not in the RTO) | $(drill_start "$mid_json") | $(phase_runs drill_start) | | | |"
            "| $label | · rest of the wall time (start-up, manifest, tool look-up, clean-up, record) | $outside | | | | |"
        )
        while read -r phase; do
            TABLE+=("| $label | (dr restore --jobs $JOBS, phase $phase, median run $((mid_e + 1))) | $(restore_phase "${JSON_E[mid_e]}" "$phase") | $(restore_runs "$phase") | | | |")
        done < <(jq -r '.sources[].phases[].name' "${JSON_E[mid_e]}" | awk '!seen[$0]++')
        TABLE+=(
            "| $label | **dr drill RTO / dr restore --jobs $JOBS** | **$(ratio "$rto" "$e")** | target ≤ $DRILL_RTO_VS_RESTORE_MAX | | | **$(pass "$(ratio "$rto" "$e")" "$DRILL_RTO_VS_RESTORE_MAX")** |"
            "| $label | dr drill wall / dr restore --jobs $JOBS | $(ratio "$g" "$e") | (information) | | | |"
            "| $label | drill checks / dr restore --jobs $JOBS | $(ratio "$(drill_phase "$mid_json" checks)" "$e") | (information) | | | |"
        )
    fi
    "$PG_BIN/dropdb" app
    rm -f "$OUT"/*.dump "$OUT"/*.age
    unset T_A T_B T_BS T_C T_D T_E T_F RSS_C RSS_E RSS_F OWN_C OWN_E OWN_F T_G RTO_G RSS_G OWN_G JSON_G JSON_E
    unset T_H RSS_H OWN_H GCPU_F GCPU_H
done

# ---------------------------------------------------------------------------------------------------------
# Report

{
    echo
    echo "Machine: $MACHINE"
    echo "Tools:   $TOOLS"
    echo "Run:     $(date -u +%Y-%m-%dT%H:%MZ), $REPS repetitions (median), restore jobs $JOBS, fsync $( ((DURABLE)) && echo on || echo off)"
    echo "Load:    $LOAD_START at the start, $(cut -d ' ' -f 1-3 /proc/loadavg) at the end (1/5/15-minute averages)"
    echo
    echo "| size | measurement | median s / ratio | runs (s) | output | peak RSS MiB: tree (dr) | target |"
    echo "|---|---|---|---|---|---|---|"
    printf '%s\n' "${TABLE[@]}"
    echo
    echo "peak RSS: GNU time %M of the dr process tree (the kernel folds in reaped children such as pg_dump);"
    echo "in parentheses dr's own VmHWM, sampled every 0.1 s. Target: both ≤ $RSS_MAX_MIB MiB."
    if ((DRILL)); then
        echo "dr drill: the tree includes the scratch PostgreSQL that dr starts and reaps (initdb, the postmaster and"
        echo "its backends, shared buffers included), so its PASS/FAIL is dr's own VmHWM against the same limit."
    fi
} | tee "${RESULTS:-/dev/null}"
