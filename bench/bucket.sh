#!/usr/bin/env bash
# Benchmark of issue 16: a bucket as a files source (`[[files]] path = "s3://bucket/prefix"`), against what a
# site does without it: `rclone sync` of the bucket to a local directory, then dr's backup of that directory.
# The bucket: set A of bench/gen_files.py (4,000 photo-like objects, ~645 MB) uploaded once with `aws s3 sync`
# under a prefix of a bucket on a single-node Garage on loopback (bench/lib/garage.sh); dr and rclone read it
# with a key that may only read it (`garage bucket allow --read`).
# Contenders, interleaved (their order alternates from one repetition to the next), --reps repetitions
# (default 3), medians:
#   rclone+dir  `rclone sync` of the prefix to a local directory (`aws s3 sync` when rclone cannot be
#               installed), then `dr backup` of that directory as a chunked [[files]] source: both timed
#   bucket      `dr backup` of the bucket source (its endpoint, region and a profile of a credentials file)
#   listing     (unchanged scenario only) a bare listing of the prefix: ListObjectsV2 pages of 1,000 keys,
#               signed by curl (--aws-sigv4), the floor of any backup that looks at every object
# Scenarios, each repetition from fresh local repositories, empty caches and no local copy: first backup,
# unchanged second backup, and a third after overwriting 1 % of the objects with new random bytes.
# Measured: wall time, peak RSS (GNU time %M), and the requests Garage's /metrics counted during each run per
# S3 endpoint (the repositories are local: every request is the source bucket's). Checked with PASS/FAIL:
# dr's unchanged backup makes no GET and 1 + ceil(N / 1000) listings, the +1 % backup exactly the changed
# objects' GETs (docs/s3.md, "What it costs, in requests"); in the first repetition, the local copy and a
# `dr restore` of the bucket's snapshot equal the data. See docs/benchmarks.md.
# Run `bench/bucket.sh --help` for the options.

# shellcheck disable=SC2046,SC2086 # value lists split on purpose
set -euo pipefail
export LC_ALL=C # join and sort below agree on one order

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib/common.sh
source "$ROOT/bench/lib/common.sh" # die, log, need, now, elapsed, median, ratio, ...
BENCH="$ROOT/bench"

SCALE=1
REPS=3
SEED=13
WORKDIR="$BENCH/out"
KEEP=0
DR_BIN=""
RESULTS=""
REPS_GIVEN=0
SRC_BUCKET=bench-media
SRC_PREFIX=uploads
SRC_PROFILE=media-readonly
LIST_PAGE=1000 # keys per ListObjectsV2 page: S3's maximum, and dr's
EMPTY_SHA256=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 # of a request without a body

usage() {
    cat <<EOF
Usage: bench/bucket.sh [options]

Times dr backup of a bucket source (path = "s3://bucket/prefix") against rclone sync of the bucket to a
local directory followed by dr backup of that directory, on 4,000 photo-like objects in a local Garage: a
first backup, an unchanged one, and one after overwriting 1 % of the objects; counts the S3 requests of each.

Options:
  --quick          a small run: 5 % of the objects (200), 1 repetition
  --reps N         repetitions; the median is reported (default: $REPS)
  --seed N         the generator's seed (default: $SEED)
  --workdir DIR    where everything is created; removed at the end (default: bench/out)
  --keep           keep the work directory
  --dr PATH        use this dr binary instead of building it (cargo build --release)
  --results FILE   also write the results table (Markdown) to FILE
  -h, --help       this help

Needs: python3, curl, age-keygen, GNU time (/usr/bin/time), the aws CLI, rclone (else aws s3 sync stands in
for it); installed with apt-get when run as root. Garage: ~/.cargo/bin/garage (tests/run installs it).
EOF
}

while (($#)); do
    case $1 in
        --quick) SCALE=0.05; ((REPS_GIVEN)) || REPS=1; shift ;;
        --reps) REPS=${2:?--reps needs a value}; REPS_GIVEN=1; shift 2 ;;
        --seed) SEED=${2:?--seed needs a value}; shift 2 ;;
        --workdir) WORKDIR=${2:?--workdir needs a value}; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --dr) DR_BIN=${2:?--dr needs a value}; shift 2 ;;
        --results) RESULTS=${2:?--results needs a value}; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done

[[ $REPS =~ ^[1-9][0-9]*$ ]] || die "--reps must be a positive integer"
[[ $SEED =~ ^[0-9]+$ ]] || die "--seed must be a number"

# ---------------------------------------------------------------------------------------------------------
# Tools


need python3 python3
need curl curl
need age-keygen age
[[ -x /usr/bin/time ]] || need /usr/bin/time time
need aws awscli
SYNC_TOOL=rclone
if ! try_install rclone rclone; then
    log "rclone could not be installed: aws s3 sync stands in for it"
    SYNC_TOOL=aws
fi

# ---------------------------------------------------------------------------------------------------------
# Work directory and cleanup

# shellcheck source=bench/lib/workdir.sh
source "$ROOT/bench/lib/workdir.sh"
make_run_dir bucket

# ---------------------------------------------------------------------------------------------------------
# Helpers (as in bench/files.sh)

mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
human() { awk -v b="$1" 'BEGIN { split("B KiB MiB GiB TiB", u); i = 1; while (b >= 1024 && i < 5) { b /= 1024; i++ } printf "%.1f %s", b, u[i] }'; }
dir_bytes() { du -sb "$1" | cut -f 1; }
garage_cpu() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$GARAGE_PID/stat"; }
count_files() { if [[ -d $1 ]]; then find "$1" -type f | wc -l; else echo 0; fi; }
max_of() { printf '%s\n' "$@" | sort -g | tail -n 1; }
pass_eq() { if [[ $1 == "$2" ]]; then echo PASS; else echo FAIL; fi; }

# Results: R[key] holds one value per repetition, space-separated.
declare -A R=()
rec() { R[$1]="${R[$1]:-}${R[$1]:+ }$2"; }
vals() { echo "${R[$1]:-}"; }

# Runs "$@" under GNU time, after a sync (outside the timing); sets LAST_SECONDS, LAST_RSS_KB, LAST_CPU (the
# command's user + system seconds) and LAST_GARAGE_CPU (Garage's, meanwhile: it shares the two CPUs).
run_timed() {
    local tf="$RUN/time.out" t0 t1 g0 status=0
    sync
    g0=$(garage_cpu)
    t0=$(now)
    /usr/bin/time -f '%M %U %S' -o "$tf" "$@" >"$RUN/cmd.out" 2>"$RUN/cmd.err" || status=$?
    t1=$(now)
    if ((status != 0)); then
        tail -n 20 "$RUN/cmd.err" >&2
        die "failed (exit status $status): $*"
    fi
    LAST_SECONDS=$(elapsed "$t0" "$t1")
    read -r LAST_RSS_KB LAST_CPU < <(tail -n 1 "$tf" | awk '{ printf "%s %.2f\n", $1, $2 + $3 }')
    LAST_GARAGE_CPU=$(elapsed "$g0" "$(garage_cpu)")
}

# ---------------------------------------------------------------------------------------------------------
# Garage: the source bucket, written once with the bench's key, read with a key that may only read it.

# shellcheck source=bench/lib/garage.sh
source "$BENCH/lib/garage.sh"
[[ -x $GARAGE ]] || die "garage is missing ($GARAGE): tests/run installs it"
start_garage
ENDPOINT="http://127.0.0.1:$GARAGE_S3_PORT"
garage_cli bucket create "$SRC_BUCKET" >/dev/null
garage_cli bucket allow --read --write --owner "$SRC_BUCKET" --key dr-bench-key >/dev/null
key=$(garage_cli key create "$SRC_PROFILE")
RO_KEY_ID=$(awk '/^Key ID:/ { print $3 }' <<<"$key")
RO_SECRET=$(awk '/^Secret key:/ { print $3 }' <<<"$key")
[[ -n $RO_KEY_ID && -n $RO_SECRET ]] || die "garage key create printed no key: $key"
garage_cli bucket allow --read "$SRC_BUCKET" --key "$SRC_PROFILE" >/dev/null

# Every AWS client here (dr's source, the aws CLI) reads these files and nothing of the host's AWS set-up.
mkdir -p "$RUN/aws"
cat >"$RUN/aws/credentials" <<EOF
[writer]
aws_access_key_id = $S3_KEY_ID
aws_secret_access_key = $S3_SECRET

[$SRC_PROFILE]
aws_access_key_id = $RO_KEY_ID
aws_secret_access_key = $RO_SECRET
EOF
cat >"$RUN/aws/config" <<EOF
[profile writer]
region = garage

[profile $SRC_PROFILE]
region = garage
EOF
chmod 600 "$RUN/aws/credentials"
export AWS_SHARED_CREDENTIALS_FILE="$RUN/aws/credentials" AWS_CONFIG_FILE="$RUN/aws/config" AWS_EC2_METADATA_DISABLED=true
# AWS_CA_BUNDLE too: Garage is plain HTTP on loopback, and rclone 1.60 (aws-sdk-go) refuses to start with one set.
unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_PROFILE AWS_DEFAULT_PROFILE AWS_REGION \
    AWS_DEFAULT_REGION AWS_CA_BUNDLE
aws_as() { # aws_as PROFILE ARGS...: the aws CLI against Garage
    local profile=$1
    shift
    aws --profile "$profile" --endpoint-url "$ENDPOINT" --only-show-errors "$@"
}

RCLONE_CONF="$RUN/rclone.conf"
cat >"$RCLONE_CONF" <<EOF
[media]
type = s3
provider = Other
env_auth = false
access_key_id = $RO_KEY_ID
secret_access_key = $RO_SECRET
endpoint = $ENDPOINT
region = garage
force_path_style = true
EOF

# Requests Garage counted so far, one "endpoint count" line per S3 endpoint, sorted.
s3_requests() {
    curl -fsS "http://127.0.0.1:$GARAGE_ADMIN_PORT/metrics" | awk '
        /^api_s3_request_counter\{/ && match($0, /api_endpoint="[^"]*"/) { c[substr($0, RSTART + 14, RLENGTH - 15)] += $NF }
        END { for (e in c) printf "%s %d\n", e, c[e] }' | sort
}
# requests_since BEFORE: the requests counted since the snapshot BEFORE (from s3_requests), by class. Sets
# REQ_LIST (ListObjects and ListObjectsV2), REQ_GET, REQ_HEAD, REQ_PUT (the PUT class), REQ_OTHER (the rest)
# and REQ_OTHER_NAMES (their endpoints), REQ_ALL (every endpoint and its count, for the log).
requests_since() {
    local diff
    diff=$(join -a 2 -e 0 -o 0,1.2,2.2 <(printf '%s\n' "$1") <(s3_requests) | awk '$3 > $2 { print $1, $3 - $2 }')
    REQ_LIST=$(awk '$1 ~ /^ListObjects(V2)?$/ { s += $2 } END { printf "%d", s }' <<<"$diff")
    REQ_GET=$(awk '$1 == "GetObject" { s += $2 } END { printf "%d", s }' <<<"$diff")
    REQ_HEAD=$(awk '$1 == "HeadObject" { s += $2 } END { printf "%d", s }' <<<"$diff")
    REQ_PUT=$(awk '$1 ~ /^(PutObject|CreateMultipartUpload|UploadPart|UploadPartCopy|CompleteMultipartUpload|CopyObject)$/ { s += $2 } END { printf "%d", s }' <<<"$diff")
    local others='^(ListObjects|ListObjectsV2|GetObject|HeadObject|PutObject|CreateMultipartUpload|UploadPart|UploadPartCopy|CompleteMultipartUpload|CopyObject)$'
    REQ_OTHER=$(awk -v known="$others" 'NF == 2 && $1 !~ known { s += $2 } END { printf "%d", s }' <<<"$diff")
    REQ_OTHER_NAMES=$(awk -v known="$others" 'NF == 2 && $1 !~ known { printf "%s%s", sep, $1; sep = ", " }' <<<"$diff")
    REQ_ALL=$(awk 'NF == 2 { printf "%s%s %d", sep, $1, $2; sep = ", " }' <<<"$diff")
}

# uri_encode STRING: STRING percent-encoded as SigV4's canonical query wants it (all but A-Z a-z 0-9 - . _ ~).
uri_encode() {
    local s=$1 out="" c i
    for ((i = 0; i < ${#s}; i++)); do
        c=${s:i:1}
        case $c in
            [A-Za-z0-9._~-]) out+=$c ;;
            *) out+=$(printf '%%%02X' "'$c") ;;
        esac
    done
    echo "$out"
}
# A bare listing of the prefix, as a backup's own listing would be: ListObjectsV2 pages of $LIST_PAGE keys,
# one curl per page (SigV4 by curl), following the continuation tokens. Prints the number of keys listed, and
# appends each request's own time (curl's time_total) to $RUN/listing.times.
# curl signs the query as written: its parameters go in SigV4's order (sorted), encoded as SigV4 encodes them.
# Each page goes to a file and is read by grep: bash's own string matching on a 220 KB page took longer than
# the request (a listing of 4,000 keys took 0.3-0.4 s that way, against 0.04 s now).
bare_listing() {
    local token="" keys=0 query page="$RUN/listing.xml"
    while :; do
        query="list-type=2&max-keys=$LIST_PAGE&prefix=$(uri_encode "$SRC_PREFIX/")"
        [[ -n $token ]] && query="continuation-token=$(uri_encode "$token")&$query"
        curl -fsS --aws-sigv4 "aws:amz:garage:s3" --user "$RO_KEY_ID:$RO_SECRET" \
            -H "x-amz-content-sha256: $EMPTY_SHA256" -o "$page" -w '%{time_total}\n' "$ENDPOINT/$SRC_BUCKET?$query" \
            >>"$RUN/listing.times"
        keys=$((keys + $({ grep -o '<Key>' "$page" || true; } | wc -l)))
        grep -q '<IsTruncated>true</IsTruncated>' "$page" || break
        token=$(grep -o '<NextContinuationToken>[^<]*' "$page" | cut -d '>' -f 2 | sed 's/&amp;/\&/g')
        [[ -n $token ]] || die "a truncated listing page without a continuation token"
    done
    echo "$keys"
}

# ---------------------------------------------------------------------------------------------------------
# dr

age-keygen -o "$RUN/identity.txt" 2>/dev/null
RECIPIENT=$(age-keygen -y "$RUN/identity.txt")
prepare_dr

DATA="$RUN/data"       # the generated objects, as files (kept equal to the bucket)
MIRROR="$RUN/mirror"   # rclone's local copy of the bucket
# write_dr_config NAME SOURCE-LINES: a dr.toml for a local repository $RUN/NAME.repo with one [[files]]
# source named media; its dedup key and cache its own.
write_dr_config() {
    cat >"$RUN/$1.toml" <<EOF
[repository]
url = "file://$RUN/$1.repo"

[encryption]
recipients = ["$RECIPIENT"]
identity_file = "$RUN/identity.txt"
dedup_key_file = "$RUN/$1.dedup.key"

[compression]
level = 3
threads = 0

[cache]
dir = "$RUN/$1.cache"

[restore]
temp_dir = "$RUN/tmp"

[[files]]
name = "media"
format = "chunked"
$2
EOF
}
write_dr_config dir "path = \"$MIRROR\""
write_dr_config bucket "path = \"s3://$SRC_BUCKET/$SRC_PREFIX\"
endpoint = \"$ENDPOINT\"
region = \"garage\"
profile = \"$SRC_PROFILE\""
mkdir -p "$RUN/tmp"

fresh() { # empty repositories and caches, no local copy
    local name
    rm -rf "$MIRROR" "$RUN"/*.repo "$RUN"/*.cache "$RUN"/*.dedup.key "$RUN/restore"
    for name in dir bucket; do
        "$DR" --config "$RUN/$name.toml" -q init >/dev/null 2>"$RUN/init.err" || die "dr init failed: $(tail -n 3 "$RUN/init.err")"
    done
}

# ---------------------------------------------------------------------------------------------------------
# The measurements: each sets LAST_SECONDS, LAST_RSS_KB and the REQ_* counts of requests_since.

LAST_OBJECTS=""

sync_copy() {
    local before
    before=$(s3_requests)
    if [[ $SYNC_TOOL == rclone ]]; then
        run_timed rclone --config "$RCLONE_CONF" sync "media:$SRC_BUCKET/$SRC_PREFIX" "$MIRROR"
    else
        # --exact-timestamps: without it, a download skips every object of the same size as its local copy, so
        # the objects overwritten with as many new bytes are never copied. With it, on Garage, every object is
        # downloaded every time: the listing's times have milliseconds, the copies' (from Last-Modified) do not.
        run_timed aws --profile "$SRC_PROFILE" --endpoint-url "$ENDPOINT" --only-show-errors \
            s3 sync --delete --exact-timestamps "s3://$SRC_BUCKET/$SRC_PREFIX" "$MIRROR"
    fi
    requests_since "$before"
}
# dr_backup NAME: a backup with $RUN/NAME.toml; also sets LAST_OBJECTS and LAST_PACKS, the objects and the packs
# it added to the local repository (what it would have PUT to an S3 repository, its lock aside).
dr_backup() {
    local before objects packs
    before=$(s3_requests)
    objects=$(count_files "$RUN/$1.repo")
    packs=$(count_files "$RUN/$1.repo/packs")
    run_timed "$DR" --config "$RUN/$1.toml" -q backup
    requests_since "$before"
    LAST_OBJECTS=$(($(count_files "$RUN/$1.repo") - objects))
    LAST_PACKS=$(($(count_files "$RUN/$1.repo/packs") - packs))
}
listing() {
    local before t0 t1 keys
    before=$(s3_requests)
    rm -f "$RUN/listing.times"
    sync
    t0=$(now)
    keys=$(bare_listing)
    t1=$(now)
    LAST_SECONDS=$(elapsed "$t0" "$t1")
    LAST_RSS_KB="" LAST_CPU="" LAST_GARAGE_CPU=""
    ((keys == OBJECTS)) || die "the bare listing found $keys keys, not $OBJECTS"
    requests_since "$before"
    LISTING_REQUESTS_SECONDS=$(awk '{ s += $1 } END { printf "%.3f", s }' "$RUN/listing.times")
}

# record KEY: the last measurement's figures under KEY, and a log line.
record() {
    rec "$1|s" "$LAST_SECONDS"
    if [[ -n $LAST_RSS_KB ]]; then rec "$1|rss" "$LAST_RSS_KB"; fi
    if [[ -n $LAST_CPU ]]; then
        rec "$1|cpu" "$LAST_CPU"
        rec "$1|garage_cpu" "$LAST_GARAGE_CPU"
    fi
    rec "$1|list" "$REQ_LIST"
    rec "$1|get" "$REQ_GET"
    rec "$1|head" "$REQ_HEAD"
    rec "$1|put" "$REQ_PUT"
    rec "$1|other" "$REQ_OTHER"
    if [[ -n $REQ_OTHER_NAMES ]]; then R[$1|other_names]=$REQ_OTHER_NAMES; fi
    if [[ -n $LAST_OBJECTS ]]; then
        rec "$1|objects" "$LAST_OBJECTS"
        rec "$1|packs" "$LAST_PACKS"
    fi
    log "rep $((rep + 1)) $1: $LAST_SECONDS s${LAST_RSS_KB:+, peak RSS $(mib "$LAST_RSS_KB") MiB}${LAST_CPU:+, CPU $LAST_CPU s (Garage $LAST_GARAGE_CPU s)}; requests: ${REQ_ALL:-none}${LAST_OBJECTS:+; $LAST_OBJECTS repository objects, $LAST_PACKS packs}"
    LAST_OBJECTS=""
}

# change_objects REP: overwrites 1 % of the objects (every 100th, shifted by REP) with new random bytes of the
# same size, in the data directory and in the bucket (with the writer's key, outside any measurement).
change_objects() {
    local staging="$RUN/changed" rel size
    rm -rf "$staging"
    mkdir -p "$staging"
    while read -r rel; do
        size=$(stat -c %s "$DATA/$rel")
        mkdir -p "$staging/$(dirname "$rel")"
        head -c "$size" /dev/urandom >"$staging/$rel"
        cp "$staging/$rel" "$DATA/$rel"
    done < <(cd "$DATA" && find . -type f -printf '%P\n' | sort | awk -v step="$((OBJECTS / CHANGED))" -v offset="$1" -v n="$CHANGED" \
        'NR % step == offset % step && c < n { print; c++ }')
    [[ $(find "$staging" -type f | wc -l) == "$CHANGED" ]] || die "change_objects picked the wrong number of objects"
    aws_as writer s3 cp --recursive "$staging" "s3://$SRC_BUCKET/$SRC_PREFIX/"
    rm -rf "$staging"
}

# same_tree A B WHAT: in the first repetition, a copy must hold the data's bytes (names and contents).
same_tree() {
    if diff -rq "$1" "$2" >"$RUN/diff.out" 2>&1; then
        log "check: $3 equals the data"
    else
        head -n 5 "$RUN/diff.out" >&2
        FAILED_CHECKS+=("$3 differs from the data")
    fi
}

# ---------------------------------------------------------------------------------------------------------
# Data: generated, uploaded once.

MACHINE=$(machine)
if [[ $SYNC_TOOL == rclone ]]; then
    SYNC_VERSION=$(rclone version | first_line)
else
    SYNC_VERSION="aws s3 sync (rclone missing)"
fi
TOOLS="$SYNC_VERSION; $(aws --version 2>&1 | cut -d ' ' -f 1); $("$GARAGE" --version 2>/dev/null | first_line); dr $DR_VERSION"
LOAD_START=$(cut -d ' ' -f 1-3 /proc/loadavg)
log "machine: $MACHINE; load average: $LOAD_START"
log "tools: $TOOLS"

log "generating set A (scale $SCALE, seed $SEED)"
read -r OBJECTS DATA_BYTES < <(python3 "$BENCH/gen_files.py" --set A --out "$DATA" --seed "$SEED" --scale "$SCALE")
CHANGED=$((OBJECTS / 100 > 0 ? OBJECTS / 100 : 1))
PAGES=$(((OBJECTS + LIST_PAGE - 1) / LIST_PAGE))
log "generated $OBJECTS files, $(human "$DATA_BYTES"); uploading them to s3://$SRC_BUCKET/$SRC_PREFIX"
aws_as writer s3 sync "$DATA" "s3://$SRC_BUCKET/$SRC_PREFIX"
listed=$(bare_listing)
((listed == OBJECTS)) || die "the bucket holds $listed objects under $SRC_PREFIX/, not $OBJECTS"

# ---------------------------------------------------------------------------------------------------------
# Main loop

SCENARIOS=(first unchanged changed)
declare -A SCENARIO_LABEL=([first]="first backup" [unchanged]="second backup, nothing changed"
    [changed]="third backup, $CHANGED objects (1 %) overwritten")
declare -A WHO_LABEL=([sync]="$SYNC_TOOL sync, bucket to a local directory" [dir]="dr backup of that directory"
    [pair]="$SYNC_TOOL sync + dr directory backup" [bucket]="**dr backup of the bucket**"
    [listing]="bare listing of the prefix (ListObjectsV2 pages, one curl each)"
    [listing_requests]="of which the requests themselves (curl's time_total)")
FAILED_CHECKS=()

for ((rep = 0; rep < REPS; rep++)); do
    fresh
    # The previous repetition's repositories and copy were just deleted: let the file system finish that work
    # before anything is timed (as bench/files.sh).
    sync
    sleep 5
    for scen in "${SCENARIOS[@]}"; do
        [[ $scen == changed ]] && change_objects "$rep"
        order=(pair bucket)
        [[ $scen == unchanged ]] && order+=(listing)
        n=${#order[@]}
        order=("${order[@]:rep % n}" "${order[@]:0:rep % n}")
        for who in "${order[@]}"; do
            case $who in
                pair)
                    sync_copy
                    record "$scen|sync"
                    sync_seconds=$LAST_SECONDS
                    dr_backup dir
                    record "$scen|dir"
                    rec "$scen|pair|s" "$(sum "$sync_seconds" "$LAST_SECONDS")"
                    ;;
                bucket)
                    dr_backup bucket
                    record "$scen|bucket"
                    ;;
                listing)
                    listing
                    record "$scen|listing"
                    rec "$scen|listing_requests|s" "$LISTING_REQUESTS_SECONDS"
                    log "rep $((rep + 1)) $scen|listing: the requests themselves took $LISTING_REQUESTS_SECONDS s"
                    ;;
            esac
        done
        if ((rep == 0)) && [[ $scen != unchanged ]]; then
            same_tree "$DATA" "$MIRROR" "$scen: $SYNC_TOOL's local copy"
            rm -rf "$RUN/restore"
            "$DR" --config "$RUN/bucket.toml" -q restore --to latest --into "media=$RUN/restore" >/dev/null 2>"$RUN/restore.err" \
                || die "dr restore of the bucket's snapshot failed: $(tail -n 3 "$RUN/restore.err")"
            same_tree "$DATA" "$RUN/restore" "$scen: dr restore of the bucket's snapshot"
            rm -rf "$RUN/restore"
        fi
    done
    rec "mirror" "$(dir_bytes "$MIRROR")"
    rec "repo_dir" "$(dir_bytes "$RUN/dir.repo")"
    rec "repo_bucket" "$(dir_bytes "$RUN/bucket.repo")"
done

# ---------------------------------------------------------------------------------------------------------
# Table

TABLE=()
med() { median $(vals "$1|s"); }
req() { # req KEY CLASS: the median count, or nothing when not measured
    local v
    v=$(vals "$1|$2")
    if [[ -n $v ]]; then median_int $v; fi
}
for scen in "${SCENARIOS[@]}"; do
    whos=(sync dir pair bucket)
    [[ $scen == unchanged ]] && whos+=(listing listing_requests)
    for who in "${whos[@]}"; do
        key="$scen|$who"
        rss=$(vals "$key|rss")
        other=$(req "$key" other)
        [[ -z $other || $other == 0 ]] || other="$other (${R[$key|other_names]:-})"
        objects=$(req "$key" objects)
        [[ -z $objects ]] || objects="$objects ($(req "$key" packs))"
        cpu=$(vals "$key|cpu")
        [[ -z $cpu ]] || cpu="$(median $cpu) / $(median $(vals "$key|garage_cpu"))"
        TABLE+=("| ${SCENARIO_LABEL[$scen]}: ${WHO_LABEL[$who]} | $(med "$key") | $(vals "$key|s") | ${rss:+$(mib "$(max_of $rss)")} | $cpu | $(req "$key" list) | $(req "$key" get) | $(req "$key" head) | $(req "$key" put) | $other | $objects | |")
    done
done
for scen in "${SCENARIOS[@]}"; do
    r=$(ratio "$(med "$scen|bucket")" "$(med "$scen|pair")")
    TABLE+=("| **dr bucket / ($SYNC_TOOL sync + dr directory), ${SCENARIO_LABEL[$scen]}** | **$r** | (information) | | | | | | | | | |")
done
r=$(ratio "$(med unchanged\|bucket)" "$(med unchanged\|listing)")
TABLE+=("| **dr bucket, nothing changed / bare listing** | **$r** | (information) | | | | | | | | | |")
r=$(ratio "$(med unchanged\|bucket)" "$(med unchanged\|listing_requests)")
TABLE+=("| dr bucket, nothing changed / the listing's requests alone | $r | (information) | | | | | | | | | |")

check() { # check LABEL GOT WANT
    TABLE+=("| **$1** | **$2** | target $3 | | | | | | | | | **$(pass_eq "$2" "$3")** |")
}
check "dr bucket, first backup: GETs" "$(req first\|bucket get)" "$OBJECTS"
check "dr bucket, first backup: listings (1 + ceil(N / $LIST_PAGE))" "$(req first\|bucket list)" "$((1 + PAGES))"
check "dr bucket, nothing changed: GETs" "$(req unchanged\|bucket get)" 0
check "dr bucket, nothing changed: listings (1 + ceil(N / $LIST_PAGE))" "$(req unchanged\|bucket list)" "$((1 + PAGES))"
check "dr bucket, $CHANGED objects overwritten: GETs" "$(req changed\|bucket get)" "$CHANGED"
check "dr bucket, $CHANGED objects overwritten: listings" "$(req changed\|bucket list)" "$((1 + PAGES))"
for key in "${!R[@]}"; do
    # Counts must not vary between repetitions: a median would hide it.
    if [[ $key =~ \|bucket\|(list|get|head|put)$ ]]; then
        read -r -a v <<<"$(vals "$key")"
        [[ $(printf '%s\n' "${v[@]}" | sort -u | wc -l) == 1 ]] || FAILED_CHECKS+=("$key varies: ${v[*]}")
    fi
done
for check_failed in "${FAILED_CHECKS[@]}"; do
    TABLE+=("| **$check_failed** | | | | | | | | | | | **FAIL** |")
done

{
    echo
    echo "Machine: $MACHINE"
    echo "Tools:   $TOOLS"
    echo "Run:     $(date -u +%Y-%m-%dT%H:%MZ), $REPS repetitions (median), seed $SEED, scale $SCALE: $OBJECTS objects, $(human "$DATA_BYTES")"
    echo "Load:    $LOAD_START at the start, $(cut -d ' ' -f 1-3 /proc/loadavg) at the end (1/5/15-minute averages)"
    echo "Space:   the local copy $(human "$(median_int $(vals mirror))"); repositories after the three backups: of the copy $(human "$(median_int $(vals repo_dir))"), of the bucket $(human "$(median_int $(vals repo_bucket))")"
    echo
    echo "| measurement | median s / value | runs (s) | peak RSS MiB (max) | CPU s: own / Garage | LIST | GET | HEAD | PUT | other requests | repository objects (packs) | target |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${TABLE[@]}"
    echo
    echo "Requests: what Garage's /metrics counted during the run (medians), by S3 endpoint: LIST = ListObjects and"
    echo "ListObjectsV2, PUT = the PUT class. The repositories are local: every request is the source bucket's."
    echo "Repository objects: the files the backup added to its local repository (packs, index objects, tree, manifest,"
    echo "snapshot, attempt record): what it would PUT to an S3 repository, besides its lock."
    echo "CPU: user + system seconds of the command (GNU time) and of the Garage server meanwhile (/proc), medians."
} | tee "${RESULTS:-/dev/null}"
((${#FAILED_CHECKS[@]} == 0)) && ! printf '%s\n' "${TABLE[@]}" | grep -q '\*\*FAIL\*\*'
