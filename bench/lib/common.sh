# Shared by the bench scripts (sourced right after ROOT is set): messages, the tools a script needs (installed
# with apt-get when run as root), timing, and the arithmetic of their tables in awk (bash has no floats).
# shellcheck shell=bash

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

now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
sum() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a + b }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { printf "%.3f", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
median_int() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { printf "%d", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.3f", a / b }'; }
