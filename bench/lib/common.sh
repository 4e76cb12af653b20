# Shared by the bench scripts (sourced right after ROOT is set): messages, the tools a script needs (installed
# with apt-get when run as root), timing, and the arithmetic of their tables in awk (bash has no floats).
# shellcheck shell=bash disable=SC2034 # DR and DR_VERSION are the callers'

die() {
    echo "bench: error: $*" >&2
    exit 1
}

log() {
    printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2
}

APT_UPDATED=0
# try_install COMMAND PACKAGE: installs PACKAGE with apt-get when run as root and COMMAND is missing; fails quietly.
try_install() {
    command -v "$1" >/dev/null 2>&1 && return 0
    if ((EUID == 0)) && command -v apt-get >/dev/null 2>&1; then
        log "installing $2 (for $1)"
        if ((!APT_UPDATED)); then
            apt-get update -qq >/dev/null
            APT_UPDATED=1
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null 2>&1 || true
    fi
    command -v "$1" >/dev/null 2>&1
}

need() { # need COMMAND PACKAGE
    try_install "$1" "$2" || die "$1 is missing; install it with: sudo apt-get install -y $2"
}

# prepare_dr: the dr binary of the run: DR_BIN if given, else a release build of this checkout; copied to
# $RUN/dr (a concurrent cargo build must not swap the binary in the middle of a run). Sets DR and DR_VERSION
# (with the commit, `+dirty` when src/ has changes). DR_HINT, when set, adds to "pass --dr PATH" when cargo
# is missing.
prepare_dr() {
    if [[ -z $DR_BIN ]]; then
        command -v cargo >/dev/null 2>&1 || die "cargo is missing (pass --dr PATH${DR_HINT:+, $DR_HINT})"
        log "building dr (cargo build --release; waits if another build holds the lock)"
        (cd "$ROOT" && cargo build --release --quiet --bin dr)
        DR_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/dr"
    fi
    [[ -x $DR_BIN ]] || die "$DR_BIN is not an executable"
    cp "$DR_BIN" "$RUN/dr"
    DR="$RUN/dr"
    DR_VERSION="$("$DR" --version) ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD -- src 2>/dev/null || echo +dirty))"
}

# The first line of the input, reading all of it: `cmd | head -n 1` under pipefail fails with 141 (SIGPIPE)
# whenever cmd writes after head has exited, which a loaded machine makes likely.
first_line() { awk 'NR == 1'; }

# What the results tables say the machine is: CPUs and their model, memory.
machine() {
    echo "$(nproc) CPUs ($(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | first_line)), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM"
}

now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
sum() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a + b }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { printf "%.3f", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
median_int() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { printf "%d", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.3f", a / b }'; }
