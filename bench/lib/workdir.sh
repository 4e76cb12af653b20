# Shared by the bench scripts (sourced): the run's own directory under $WORKDIR, and the clean-up at exit,
# however the script ends: the script's own `before_cleanup` first (when it defines one: servers, measured
# commands), Garage stopped (if started), the directory removed unless KEEP=1.
# The caller sets WORKDIR and KEEP, and calls `make_run_dir NAME`, which sets RUN.
# shellcheck shell=bash disable=SC2034 # RUN and GARAGE_PID are the caller's

make_run_dir() {
    mkdir -p "$WORKDIR"
    WORKDIR=$(cd "$WORKDIR" && pwd)
    RUN=$(mktemp -d "$WORKDIR/$1.XXXXXX")
    GARAGE_PID="" # set by start_garage (bench/lib/garage.sh)
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if declare -F before_cleanup >/dev/null; then before_cleanup; fi
    if [[ -n $GARAGE_PID ]]; then
        kill "$GARAGE_PID" 2>/dev/null || true
        wait "$GARAGE_PID" 2>/dev/null || true
    fi
    if ((KEEP)); then
        log "kept $RUN"
    else
        rm -rf "$RUN"
        rmdir "$WORKDIR" 2>/dev/null || true
    fi
    exit "$status"
}
