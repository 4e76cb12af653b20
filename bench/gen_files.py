#!/usr/bin/env python3
"""Seeded generator of the files benchmark's data sets (bench/files.sh, docs/benchmarks.md).

Set A, photo-like: 4,000 files of random bytes (incompressible, as JPEGs are), sizes uniform in
20,000..300,000 bytes (mean 160 KB; 644.7 MB in all with the default seed), 500 per directory in `YYYY/MM/`
directories. Set B, small files: 200,000 files of random bytes, sizes uniform in 1,024..16,384 bytes (mean
8.5 KiB, about 1.7 GB), 500 per directory in `NNN/NN/` directories (400 directories).

`--add ROUND` adds 1 % new files (40 to A, 2,000 to B) in a new directory `new-ROUND/`, as a site's new uploads
land in the current month's directory. The same seed gives the same bytes, names and mtimes on every machine.

Usage: gen_files.py --set A|B --out DIR [--seed N] [--scale F] [--add ROUND]
  --scale F multiplies the file count (bench/files.sh --quick uses 0.05).
"""

import argparse
import os
import random
import sys

SETS = {
    # name: (files, min size, max size, files per directory)
    "A": (4000, 20_000, 300_000, 500),
    "B": (200_000, 1024, 16_384, 500),
}
# A fixed base time (2026-11-01T00:00:00Z) so mtimes are reproducible; each file gets whole seconds plus
# nanoseconds, so a restore that rounds times shows up in a comparison.
BASE_MTIME = 1_793_491_200


def directory_name(set_name: str, index: int) -> str:
    if set_name == "A":
        year, month = divmod(index, 12)
        return f"{2020 + year}/{month + 1:02d}"
    top, sub = divmod(index, 20)
    return f"{top:03d}/{sub:02d}"


def write_file(path: str, rng: random.Random, low: int, high: int) -> int:
    size = rng.randint(low, high)
    with open(path, "wb") as f:
        f.write(rng.randbytes(size))
    mtime_ns = (BASE_MTIME + rng.randrange(30 * 86400)) * 1_000_000_000 + rng.randrange(1_000_000_000)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", choices=sorted(SETS), required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--add", type=int, metavar="ROUND", help="add 1 %% new files, round ROUND (1, 2, ...)")
    args = parser.parse_args()

    count, low, high, per_dir = SETS[args.set]
    count = max(1, round(count * args.scale))
    total = 0
    if args.add is None:
        if os.path.exists(args.out) and os.listdir(args.out):
            print(f"gen_files: {args.out} is not empty", file=sys.stderr)
            return 1
        rng = random.Random(f"{args.seed}/{args.set}/base")
        for i in range(count):
            d = os.path.join(args.out, directory_name(args.set, i // per_dir))
            if i % per_dir == 0:
                os.makedirs(d, exist_ok=True)
            total += write_file(os.path.join(d, f"{i % per_dir:04d}.jpg"), rng, low, high)
        written = count
    else:
        written = max(1, count // 100)
        rng = random.Random(f"{args.seed}/{args.set}/add/{args.add}")
        d = os.path.join(args.out, f"new-{args.add}")
        os.makedirs(d, exist_ok=False)
        for i in range(written):
            total += write_file(os.path.join(d, f"{i:04d}.jpg"), rng, low, high)
    print(f"{written} {total}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
