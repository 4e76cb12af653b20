#!/usr/bin/env bash
# Sweep of the chunk sizes of chunked files sources (`[chunking] min_size / avg_size / max_size`): for each
# average size (min = avg / 2, max = avg x 8, the default's proportions), a fresh local repository backs up a
# 256 MiB file of random bytes (a video: incompressible, large), then three edited versions of it:
#   insert    32 insertions of 1-100 bytes at random offsets (a file re-tagged or re-muxed in place)
#   append    4 MiB appended (a growing log or archive)
#   overwrite 64 random 4 KiB pages rewritten (a database file)
# and reports, per edit, the bytes the backup added to the repository (`dr backup --json`, chunked.bytes_added)
# and, for the first backup, the chunks the file became (the index's memory is 48 bytes a chunk). What it
# measures is bytes, not time, so a noisy machine gives the same answer. Results: docs/benchmarks.md,
# "Chunk and pack sizes".
#
# Usage: bench/chunk_sizes.sh [--dr PATH] [--sizes "256 512 1024 2048"] (KiB; the chunker takes max_size up to 16 MiB) [--workdir DIR]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DR_BIN=""
SIZES="256 512 1024 2048"
WORKDIR="$ROOT/bench/out"
while (($#)); do
    case "$1" in
    --dr) DR_BIN="$2"; shift 2 ;;
    --sizes) SIZES="$2"; shift 2 ;;
    --workdir) WORKDIR="$2"; shift 2 ;;
    -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
for tool in python3 jq age-keygen; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is needed" >&2; exit 1; }
done
if [[ -z $DR_BIN ]]; then
    (cd "$ROOT" && cargo build --release --quiet)
    DR_BIN="$ROOT/target/release/dr"
fi

mkdir -p "$WORKDIR"
RUN=$(mktemp -d "$(cd "$WORKDIR" && pwd)/chunks.XXXXXX")
trap 'rm -rf "$RUN"' EXIT
age-keygen -o "$RUN/identity.txt" 2>/dev/null
RECIPIENT=$(age-keygen -y "$RUN/identity.txt")

# edit VERSION: writes the file as it is at that version (seeded: the same bytes on every machine).
edit() {
    python3 - "$RUN/src/video.bin" "$1" <<'EOF'
import random, sys
path, version = sys.argv[1], sys.argv[2]
rng = random.Random(13)
base = bytearray(b"".join(rng.randbytes(1 << 20) for _ in range(256)))
if version == "insert":
    for offset in sorted(rng.sample(range(len(base)), 32), reverse=True):
        base[offset:offset] = rng.randbytes(rng.randint(1, 100))
elif version == "append":
    base += rng.randbytes(4 << 20)
elif version == "overwrite":
    for page in rng.sample(range(len(base) // 4096), 64):
        base[page * 4096:(page + 1) * 4096] = rng.randbytes(4096)
open(path, "wb").write(base)
EOF
}

printf '| avg chunk (min-max) | chunks of the 256 MiB file | index memory | insert: bytes added | append 4 MiB: bytes added | overwrite 64 pages: bytes added |\n'
printf '|---|---|---|---|---|---|\n'
for avg_kib in $SIZES; do
    rm -rf "$RUN/repo" "$RUN/src" "$RUN/cache" "$RUN/dedup.key"
    mkdir -p "$RUN/src"
    cat >"$RUN/dr.toml" <<EOF
[repository]
url = "file://$RUN/repo"
[encryption]
recipients = ["$RECIPIENT"]
identity_file = "$RUN/identity.txt"
dedup_key_file = "$RUN/dedup.key"
[cache]
dir = "$RUN/cache"
[chunking]
min_size = "$((avg_kib / 2)) KiB"
avg_size = "$avg_kib KiB"
max_size = "$((avg_kib * 8)) KiB"
[[files]]
name = "data"
path = "$RUN/src"
EOF
    if ! "$DR_BIN" --config "$RUN/dr.toml" -q init >/dev/null 2>"$RUN/init.err"; then
        echo "| $avg_kib KiB: $(tail -n 2 "$RUN/init.err" | head -n 1) |"
        continue
    fi
    row="| $avg_kib KiB ($((avg_kib / 2)) KiB-$((avg_kib * 8 / 1024)) MiB)"
    for version in original insert append overwrite; do
        edit "$version"
        added=$("$DR_BIN" --config "$RUN/dr.toml" -q backup --json | jq '.sources[0].chunked')
        if [[ $version == original ]]; then
            chunks=$(jq .chunks_added <<<"$added")
            row+=" | $chunks | $((chunks * 48 / 1024)) KiB"
        else
            row+=" | $(jq '.bytes_added / 1048576 * 10 | round / 10' <<<"$added") MiB"
        fi
    done
    echo "$row |"
done
