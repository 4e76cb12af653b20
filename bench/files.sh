#!/usr/bin/env bash
# Benchmark of issue 13: chunked, deduplicated files backups (`[[files]] format = "chunked"`) side by side with
# the tar pipeline and restic, on generated data (bench/gen_files.py):
#   set A: 4,000 photo-like files (random bytes, 20-300 KB, ~645 MB);
#   set B: 200,000 small files (random bytes, 1-16 KiB, ~1.7 GB).
# Contenders, interleaved, --reps repetitions (default 3), medians:
#   tar        tar -cf - | zstd -3 -T0 | age -r KEY > FILE   (no increments: every backup is a full one)
#   dr         dr backup into a local repository, the source with format = "chunked"
#   restic     restic backup into a local repository (the distribution's restic, repository v2)
#   dr_s3      dr backup into a bucket of a single-node Garage on loopback      (--no-s3 skips both)
#   restic_s3  restic backup into the same Garage, another prefix
# Scenarios, in this order on one source tree: first backup (fresh repository), unchanged second backup, a
# backup after adding 1 % new files, and after adding 1 % again. Then restores of the last backup:
# age -d | zstd -d | tar -x of the pipeline's archive, dr restore, restic restore.
# Measured: wall time, peak RSS (GNU time %M), repository size (du -sb), S3 PUT-class requests per backup
# (from Garage's /metrics). Goals of issue 13 checked with PASS/FAIL. See docs/benchmarks.md.
# Run `bench/files.sh --help` for the options.

# shellcheck disable=SC2016,SC2046,SC2086 # bash -c scripts in single quotes; value lists split on purpose
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib/common.sh
source "$ROOT/bench/lib/common.sh" # die, log, need, now, elapsed, median, ratio, ...
BENCH="$ROOT/bench"

# Goals (issue 13).
FIRST_VS_TAR_MAX=1.05      # dr first backup / tar pipeline
SIZE_VS_DATA_MAX=1.03      # dr repository after the backups / bytes of data (the data plus the new data)
RESTORE_VS_TAR_MAX=1.10    # dr restore / age -d | zstd -d | tar -x
RSS_BASE_MIB=64            # dr peak RSS: 64 MiB ...
RSS_PER_CHUNK_BYTES=48     # ... plus the index's 48 bytes per chunk (docs/repository-format.md)
# Chunks a file costs with the default chunking.json (files up to min_size are one chunk).
CHUNK_MIN=524288
CHUNK_AVG=1048576

SETS="A,B"
REPS=3
SCALE_A=1
SCALE_B=1
SEED=13
WORKDIR="$BENCH/out"
KEEP=0
DR_BIN=""
RESULTS=""
WITH_DR=1
S3=""
REPS_GIVEN=0

usage() {
    cat <<EOF
Usage: bench/files.sh [options]

Times dr backup (format = "chunked"), the tar | zstd | age pipeline and restic on generated files: a first
backup, an unchanged one, and two after adding 1 % new files each; then restores of the last backup.

Options:
  --quick          a small run: set A at 5 % (200 files), set B at 1 % (2,000 files), 1 repetition
  --sets LIST      data sets, comma-separated: A (4,000 photo-like files), B (200,000 small files)
                   (default: $SETS)
  --reps N         repetitions; the median is reported (default: $REPS)
  --seed N         the generator's seed (default: $SEED)
  --workdir DIR    where everything is created; removed at the end (default: bench/out)
  --keep           keep the work directory
  --dr PATH        use this dr binary instead of building it (cargo build --release)
  --no-dr          leave dr out: only the tar pipeline and restic (for a dr without format = "chunked")
  --no-s3          leave out the backups to Garage (measured when garage is installed)
  --results FILE   also write the results table (Markdown) to FILE
  -h, --help       this help

Needs: python3, tar, zstd, age, age-keygen, restic, GNU time (/usr/bin/time), jq, curl; installed with
apt-get when run as root. Garage (for S3): ~/.cargo/bin/garage (tests/run installs it).
EOF
}

while (($#)); do
    case $1 in
        --quick) SCALE_A=0.05; SCALE_B=0.01; ((REPS_GIVEN)) || REPS=1; shift ;;
        --sets) SETS=${2:?--sets needs a value}; shift 2 ;;
        --reps) REPS=${2:?--reps needs a value}; REPS_GIVEN=1; shift 2 ;;
        --seed) SEED=${2:?--seed needs a value}; shift 2 ;;
        --workdir) WORKDIR=${2:?--workdir needs a value}; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --dr) DR_BIN=${2:?--dr needs a value}; shift 2 ;;
        --no-dr) WITH_DR=0; shift ;;
        --no-s3) S3=0; shift ;;
        --results) RESULTS=${2:?--results needs a value}; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done

[[ $REPS =~ ^[1-9][0-9]*$ ]] || die "--reps must be a positive integer"
[[ $SEED =~ ^[0-9]+$ ]] || die "--seed must be a number"
IFS=, read -r -a SET_LIST <<<"$SETS"
((${#SET_LIST[@]})) || die "--sets is empty"
for set in "${SET_LIST[@]}"; do
    [[ $set == A || $set == B ]] || die "--sets: unknown data set $set (A or B)"
done

# ---------------------------------------------------------------------------------------------------------
# Tools


need python3 python3
need tar tar
need zstd zstd
need age age
need age-keygen age
[[ -x /usr/bin/time ]] || need /usr/bin/time time
need jq jq
need curl curl
need restic restic

# ---------------------------------------------------------------------------------------------------------
# Work directory and cleanup

# shellcheck source=bench/lib/workdir.sh
source "$ROOT/bench/lib/workdir.sh"
make_run_dir files

# ---------------------------------------------------------------------------------------------------------
# Helpers (as in bench/run.sh)

le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a <= b) }'; }
lt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a < b) }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
human() { awk -v b="$1" 'BEGIN { split("B KiB MiB GiB TiB", u); i = 1; while (b >= 1024 && i < 5) { b /= 1024; i++ } printf "%.1f %s", b, u[i] }'; }
file_bytes() { stat -c %s "$1"; }
dir_bytes() { du -sb "$1" | cut -f 1; }
max_of() { printf '%s\n' "$@" | sort -g | tail -n 1; }
pass_le() { if le "$1" "$2"; then echo PASS; else echo FAIL; fi; }
pass_lt() { if lt "$1" "$2"; then echo PASS; else echo FAIL; fi; }
# Bytes of the regular files below a directory (what "data" means in the size goal).
data_bytes() { find "$1" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%d", s }'; }
# The listing a restore must reproduce (issue 13's acceptance: find -printf '%P %y %m %s %T@ %l %u:%g'), with
# directories' sizes left out: they are the file system's bookkeeping (ext4 directories grow in blocks and
# never shrink), not data. listing_types: a lighter one (names, types, file sizes) for the tools that do not
# keep every piece of metadata.
listing() { (cd "$1" && find . \( -type d -printf '%P %y %m - %T@ %l %u:%g\n' \) -o -printf '%P %y %m %s %T@ %l %u:%g\n' | sort); }
listing_types() { (cd "$1" && find . \( -type d -printf '%P %y -\n' \) -o -printf '%P %y %s\n' | sort); }

# Results: R[key] holds one value per repetition, space-separated.
declare -A R=()
rec() { R[$1]="${R[$1]:-}${R[$1]:+ }$2"; }
vals() { echo "${R[$1]:-}"; }

# Runs "$@" under GNU time, after a sync (outside the timing); sets LAST_SECONDS and LAST_RSS_KB.
run_timed() {
    local tf="$RUN/time.out" t0 t1 status=0
    sync
    t0=$(now)
    /usr/bin/time -f '%M' -o "$tf" "$@" >"$RUN/cmd.out" 2>"$RUN/cmd.err" || status=$?
    t1=$(now)
    if ((status != 0)); then
        tail -n 20 "$RUN/cmd.err" >&2
        die "failed (exit status $status): $*"
    fi
    LAST_SECONDS=$(elapsed "$t0" "$t1")
    LAST_RSS_KB=$(tail -n 1 "$tf")
}

# ---------------------------------------------------------------------------------------------------------
# Keys, dr

age-keygen -o "$RUN/identity.txt" 2>/dev/null
RECIPIENT=$(age-keygen -y "$RUN/identity.txt")
export RESTIC_PASSWORD=dr-bench-restic
RESTIC_VERSION=$(restic version | awk '{ print $2 }')
mkdir -p "$RUN/out" "$RUN/tmp" "$RUN/data" "$RUN/restore"
OUT="$RUN/out"

DR=""
DR_VERSION="(not run)"
if ((WITH_DR)); then
    DR_HINT="or --no-dr" prepare_dr
fi

# ---------------------------------------------------------------------------------------------------------
# S3: a single-node Garage on loopback (bench/lib/garage.sh); its /metrics counts the PUT-class requests.

# shellcheck source=bench/lib/garage.sh
source "$BENCH/lib/garage.sh"
if [[ ${S3:-1} == 1 && ! -x $GARAGE ]]; then
    log "garage not found: the S3 measurements are skipped (tests/run installs it)"
    S3=0
fi
S3=${S3:-1}
S3_ENV=()
if ((S3)); then
    start_garage
    # The bucket's key in the environment (never in a config), nothing read from the host's AWS set-up.
    S3_ENV=(env "AWS_ACCESS_KEY_ID=$S3_KEY_ID" "AWS_SECRET_ACCESS_KEY=$S3_SECRET" AWS_REGION=garage
        AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null)
fi

# ---------------------------------------------------------------------------------------------------------
# Repositories. Every repetition starts from fresh ones (and empty caches), so each "first" is a first.

# write_dr_config FILE REPOSITORY-SECTION NAME: a dr.toml for one repository, its dedup key and cache its own.
write_dr_config() {
    cat >"$1" <<EOF
$2

[encryption]
recipients = ["$RECIPIENT"]
identity_file = "$RUN/identity.txt"
dedup_key_file = "$RUN/$3.dedup.key"

[compression]
level = 3
threads = 0

[cache]
dir = "$RUN/$3.cache"

[restore]
temp_dir = "$RUN/tmp"

[[files]]
name = "data"
path = "$SRC"
format = "chunked"
EOF
}

fresh_repos() { # fresh_repos SET REP
    local tag="$1-$2"
    rm -rf "$RUN/dr-local" "$RUN/restic-local" "$RUN"/*.dedup.key "$RUN"/*.cache "$RUN/restic-cache"
    if ((WITH_DR)); then
        write_dr_config "$RUN/dr-local.toml" "[repository]
url = \"file://$RUN/dr-local\"" dr-local
        "$DR" --config "$RUN/dr-local.toml" -q init >/dev/null 2>"$RUN/init.err" \
            || die "dr init failed (a dr without [[files]] format = \"chunked\"? then use --no-dr): $(tail -n 3 "$RUN/init.err")"
        if ((S3)); then
            write_dr_config "$RUN/dr-s3.toml" "[repository]
url = \"s3://dr-bench/dr-$tag\"
endpoint = \"http://127.0.0.1:$GARAGE_S3_PORT\"
region = \"garage\"" dr-s3
            "${S3_ENV[@]}" "$DR" --config "$RUN/dr-s3.toml" -q init >/dev/null
        fi
    fi
    restic -r "$RUN/restic-local" init --repository-version 2 >/dev/null
    if ((S3)); then
        RESTIC_S3="s3:http://127.0.0.1:$GARAGE_S3_PORT/dr-bench/restic-$tag"
        "${S3_ENV[@]}" restic -r "$RESTIC_S3" -o s3.region=garage init --repository-version 2 >/dev/null
    fi
}

# ---------------------------------------------------------------------------------------------------------
# The measurements. A backup sets LAST_SECONDS, LAST_RSS_KB, LAST_BYTES (repository or archive) and
# LAST_PUTS (S3 only).

backup_tar() {
    run_timed bash -c 'set -o pipefail; tar -cf - -C "$1" . | zstd -q -3 -T0 | age -r "$2" >"$3"' \
        _ "$SRC" "$RECIPIENT" "$OUT/archive.tar.zst.age"
    LAST_BYTES=$(file_bytes "$OUT/archive.tar.zst.age")
}
backup_dr() {
    run_timed "$DR" --config "$RUN/dr-local.toml" -q backup
    LAST_BYTES=$(dir_bytes "$RUN/dr-local")
}
backup_restic() {
    run_timed restic -r "$RUN/restic-local" --cache-dir "$RUN/restic-cache/local" backup --quiet --host bench "$SRC"
    LAST_BYTES=$(dir_bytes "$RUN/restic-local")
}
backup_dr_s3() {
    local before
    before=$(s3_puts)
    run_timed "${S3_ENV[@]}" "$DR" --config "$RUN/dr-s3.toml" -q backup
    LAST_PUTS=$(($(s3_puts) - before))
}
backup_restic_s3() {
    local before
    before=$(s3_puts)
    run_timed "${S3_ENV[@]}" restic -r "$RESTIC_S3" -o s3.region=garage --cache-dir "$RUN/restic-cache/s3" \
        backup --quiet --host bench "$SRC"
    LAST_PUTS=$(($(s3_puts) - before))
}

# A restore sets LAST_SECONDS, LAST_RSS_KB and LAST_DIR (where the source's tree landed).
restore_tar() {
    local dir="$RUN/restore/tar"
    rm -rf "$dir" && mkdir -p "$dir"
    run_timed bash -c 'set -o pipefail; age -d -i "$1" "$2" | zstd -d -q | tar -x -f - -C "$3"' \
        _ "$RUN/identity.txt" "$OUT/archive.tar.zst.age" "$dir"
    LAST_DIR=$dir
}
restore_dr() {
    local dir="$RUN/restore/dr"
    rm -rf "$dir"
    run_timed "$DR" --config "$RUN/dr-local.toml" -q restore --to latest --into "data=$dir"
    LAST_DIR=$dir
}
restore_restic() {
    local dir="$RUN/restore/restic"
    rm -rf "$dir"
    run_timed restic -r "$RUN/restic-local" --cache-dir "$RUN/restic-cache/local" restore latest --target "$dir"
    LAST_DIR=$dir$SRC # restic recreates the absolute path below the target
}

# ---------------------------------------------------------------------------------------------------------
# Main loop

MACHINE=$(machine)
TOOLS="$(tar --version | first_line); $(zstd --version | sed -n 's/.*\(v[0-9.]*\).*/zstd \1/p'); age $(age --version); restic $RESTIC_VERSION; dr $DR_VERSION"
LOAD_START=$(cut -d ' ' -f 1-3 /proc/loadavg)
log "machine: $MACHINE; load average: $LOAD_START"
log "tools: $TOOLS"

BACKUPS=(tar restic)
((WITH_DR)) && BACKUPS+=(dr)
((S3)) && BACKUPS+=(restic_s3)
((S3 && WITH_DR)) && BACKUPS+=(dr_s3)
RESTORES=(tar restic)
((WITH_DR)) && RESTORES+=(dr)
SCENARIOS=(first unchanged add1 add2)
declare -A SCENARIO_LABEL=([first]="first backup" [unchanged]="second backup, nothing changed"
    [add1]="third backup, +1 % new files" [add2]="fourth backup, +1 % new files again")
declare -A WHO_LABEL=([tar]="tar | zstd -3 -T0 | age" [dr]="dr backup (chunked, local)" [restic]="restic backup (local)"
    [dr_s3]="dr backup (chunked, Garage)" [restic_s3]="restic backup (Garage)")
declare -A RESTORE_LABEL=([tar]="age -d | zstd -d | tar -x" [dr]="dr restore" [restic]="restic restore")
TABLE=()
FAILED_CHECKS=()

for set in "${SET_LIST[@]}"; do
    scale=$SCALE_A
    [[ $set == B ]] && scale=$SCALE_B
    SRC="$RUN/data/$set"
    log "== set $set: generating (scale $scale, seed $SEED)"
    read -r base_files base_bytes < <(python3 "$BENCH/gen_files.py" --set "$set" --out "$SRC" --seed "$SEED" --scale "$scale")
    log "generated $base_files files, $(human "$base_bytes")"
    # Warm-up (not timed): every tool reads files that are in the page cache, in every run.
    tar -cf - -C "$SRC" . >/dev/null

    for ((rep = 0; rep < REPS; rep++)); do
        rm -rf "$SRC"/new-*
        fresh_repos "$set" "$rep"
        # The previous repetition's repositories and restored trees were just deleted: let the file system
        # finish that work before anything is timed (the first run of a repetition took up to 7x longer).
        sync
        sleep 5
        n=${#BACKUPS[@]}
        order=("${BACKUPS[@]:rep % n}" "${BACKUPS[@]:0:rep % n}")
        # Rotated, and reversed every other repetition: a plain rotation has every contender always run right
        # after the same one (dr after restic, whose 1.7 GB of new files slowed the next fsync-heavy run).
        if ((rep % 2 == 1)); then
            local_order=()
            for ((i = ${#order[@]} - 1; i >= 0; i--)); do local_order+=("${order[i]}"); done
            order=("${local_order[@]}")
        fi
        for scen in "${SCENARIOS[@]}"; do
            case $scen in
                add1) python3 "$BENCH/gen_files.py" --set "$set" --out "$SRC" --seed "$SEED" --scale "$scale" --add 1 >/dev/null ;;
                add2) python3 "$BENCH/gen_files.py" --set "$set" --out "$SRC" --seed "$SEED" --scale "$scale" --add 2 >/dev/null ;;
            esac
            for who in "${order[@]}"; do
                LAST_BYTES="" LAST_PUTS=""
                "backup_$who"
                rec "$set|$who|$scen|s" "$LAST_SECONDS"
                rec "$set|$who|$scen|rss" "$LAST_RSS_KB"
                [[ -n $LAST_BYTES ]] && rec "$set|$who|$scen|bytes" "$LAST_BYTES"
                [[ -n $LAST_PUTS ]] && rec "$set|$who|$scen|puts" "$LAST_PUTS"
                log "set $set rep $((rep + 1)) $scen: ${WHO_LABEL[$who]}: $LAST_SECONDS s, peak RSS $(mib "$LAST_RSS_KB") MiB${LAST_BYTES:+, $(human "$LAST_BYTES")}${LAST_PUTS:+, $LAST_PUTS PUTs}"
            done
        done
        rec "$set|data" "$(data_bytes "$SRC")"

        n=${#RESTORES[@]}
        rorder=("${RESTORES[@]:rep % n}" "${RESTORES[@]:0:rep % n}")
        expected=$(listing "$SRC")
        expected_types=$(listing_types "$SRC")
        for who in "${rorder[@]}"; do
            "restore_$who"
            rec "$set|restore_$who|s" "$LAST_SECONDS"
            rec "$set|restore_$who|rss" "$LAST_RSS_KB"
            log "set $set rep $((rep + 1)) restore: ${RESTORE_LABEL[$who]}: $LAST_SECONDS s, peak RSS $(mib "$LAST_RSS_KB") MiB"
            if ((rep == 0)); then
                # dr must give back everything find shows (the root's own line included); the others names,
                # types and sizes (GNU tar's default format keeps whole seconds, restic the rest).
                if [[ $who == dr ]]; then
                    got=$(listing "$LAST_DIR")
                    want=$expected
                else
                    got=$(listing_types "$LAST_DIR")
                    want=$expected_types
                fi
                if [[ $got != "$want" ]]; then
                    log "set $set: ${RESTORE_LABEL[$who]} restored a different tree:"
                    diff <(printf '%s\n' "$want") <(printf '%s\n' "$got") | head -n 10 >&2 || true
                    FAILED_CHECKS+=("set $set: ${RESTORE_LABEL[$who]} restored a different tree")
                fi
            fi
            rm -rf "$RUN/restore/$who"
        done
        rm -f "$OUT/archive.tar.zst.age"
    done

    # ----- the table rows of this set
    data=$(median_int $(vals "$set|data"))
    label="$set ($base_files files, $(human "$base_bytes"))"
    for scen in "${SCENARIOS[@]}"; do
        for who in "${BACKUPS[@]}"; do
            v=$(vals "$set|$who|$scen|s")
            bytes=$(vals "$set|$who|$scen|bytes")
            puts=$(vals "$set|$who|$scen|puts")
            TABLE+=("| $label | ${SCENARIO_LABEL[$scen]}: ${WHO_LABEL[$who]//|/\\|} | $(median $v) | $v | ${bytes:+$(human "$(median_int $bytes)")} | $(mib "$(max_of $(vals "$set|$who|$scen|rss"))") | ${puts:+$(median_int $puts)} | |")
        done
    done
    for who in "${RESTORES[@]}"; do
        v=$(vals "$set|restore_$who|s")
        TABLE+=("| $label | restore: ${RESTORE_LABEL[$who]//|/\\|} | $(median $v) | $v | | $(mib "$(max_of $(vals "$set|restore_$who|rss"))") | | |")
    done

    # ----- goals
    med() { median $(vals "$set|$1|$2|s"); }
    r=$(ratio "$(med restic first)" "$(med tar first)")
    TABLE+=("| $label | restic first / tar pipeline | $r | (information) | | | | |")
    r=$(ratio "$(median $(vals "$set|restore_restic|s"))" "$(median $(vals "$set|restore_tar|s"))")
    TABLE+=("| $label | restic restore / tar -x | $r | (information) | | | | |")
    if ((WITH_DR)); then
        r=$(ratio "$(med dr first)" "$(med tar first)")
        TABLE+=("| $label | **dr first / tar pipeline** | **$r** | target ≤ $FIRST_VS_TAR_MAX | | | | **$(pass_le "$r" "$FIRST_VS_TAR_MAX")** |")
        for scen in "${SCENARIOS[@]}"; do
            r=$(ratio "$(med dr "$scen")" "$(med restic "$scen")")
            TABLE+=("| $label | **dr / restic, ${SCENARIO_LABEL[$scen]}** | **$r** | target < 1 | | | | **$(pass_lt "$r" 1)** |")
        done
        dr_bytes=$(median_int $(vals "$set|dr|add2|bytes"))
        restic_bytes=$(median_int $(vals "$set|restic|add2|bytes"))
        r=$(ratio "$dr_bytes" "$data")
        TABLE+=("| $label | **dr repository after 4 backups / data** | **$r** | target ≤ $SIZE_VS_DATA_MAX ($(human "$dr_bytes") for $(human "$data")) | | | | **$(pass_le "$r" "$SIZE_VS_DATA_MAX")** |")
        TABLE+=("| $label | restic repository after 4 backups / data | $(ratio "$restic_bytes" "$data") | (information) | | | | |")
        # Chunks in the repository: with the default chunking a file up to min_size is one chunk, a larger one
        # about size / avg_size; the snapshots' trees add a few (64 KiB average), left out of this estimate.
        chunks=$(find "$SRC" -type f -printf '%s\n' | awk -v min="$CHUNK_MIN" -v avg="$CHUNK_AVG" '{ n += ($1 <= min) ? 1 : int(($1 + avg - 1) / avg) } END { printf "%d", n }')
        limit_kb=$((RSS_BASE_MIB * 1024 + chunks * RSS_PER_CHUNK_BYTES / 1024))
        rss=$(max_of $(vals "$set|dr|first|rss") $(vals "$set|dr|unchanged|rss") $(vals "$set|dr|add1|rss") $(vals "$set|dr|add2|rss") $(vals "$set|restore_dr|rss"))
        TABLE+=("| $label | **dr peak RSS, every backup and restore (MiB)** | **$(mib "$rss")** | target ≤ $(mib "$limit_kb") ($RSS_BASE_MIB MiB + $RSS_PER_CHUNK_BYTES B × $chunks chunks) | | | | **$(pass_le "$rss" "$limit_kb")** |")
        r=$(ratio "$(median $(vals "$set|restore_dr|s"))" "$(median $(vals "$set|restore_tar|s"))")
        TABLE+=("| $label | **dr restore / tar -x** | **$r** | target ≤ $RESTORE_VS_TAR_MAX | | | | **$(pass_le "$r" "$RESTORE_VS_TAR_MAX")** |")
        if ((S3)); then
            for scen in "${SCENARIOS[@]}"; do
                r=$(ratio "$(med dr_s3 "$scen")" "$(med restic_s3 "$scen")")
                TABLE+=("| $label | dr / restic on Garage, ${SCENARIO_LABEL[$scen]} | $r | (information) | | | | |")
            done
        fi
    fi
    rm -rf "$SRC"
done

# ---------------------------------------------------------------------------------------------------------
# Report

{
    echo
    echo "Machine: $MACHINE"
    echo "Tools:   $TOOLS"
    echo "Run:     $(date -u +%Y-%m-%dT%H:%MZ), $REPS repetitions (median), seed $SEED, scale A $SCALE_A B $SCALE_B$( ((S3)) || echo ', no S3')"
    echo "Load:    $LOAD_START at the start, $(cut -d ' ' -f 1-3 /proc/loadavg) at the end (1/5/15-minute averages)"
    echo
    echo "| set | measurement | median s / ratio | runs (s) | repository / archive | peak RSS MiB (max) | S3 PUTs | target |"
    echo "|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${TABLE[@]}"
    echo
    echo "Repository: du -sb of the local repository (the tar pipeline: its one archive) after that backup."
    echo "S3 PUTs: PutObject, CreateMultipartUpload, UploadPart and CompleteMultipartUpload requests Garage counted"
    echo "during that backup (its /metrics), locks and index objects included."
    if ((${#FAILED_CHECKS[@]})); then
        echo
        printf 'CHECK FAILED: %s\n' "${FAILED_CHECKS[@]}"
    fi
} | tee "${RESULTS:-/dev/null}"
((${#FAILED_CHECKS[@]} == 0))
