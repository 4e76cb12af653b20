#!/usr/bin/env python3
"""Fill in the data offsets of a pg_dump custom-format archive that was written to a pipe.

pg_dump -Fc writing to a seekable file goes back at the end and records, in every TOC entry, where that
entry's data block starts. Written to a pipe (as dr does, and as `pg_dump | zstd | age` does) it cannot, so
the TOC says "offset not set", and `pg_restore --jobs N` must find every table's data by walking the chunk
headers in front of it; a -Z0 archive has one chunk per row. This script walks the blocks once and writes the
offsets into the TOC in place, which makes the file byte-identical to pg_dump's own seekable output (apart
from the creation time in the header). dr does the same while it stages an archive (src/pg/archive.rs, checked
against pg_dump in tests/it/pg_archive.rs); this script is the by-hand version, for inspecting an archive.

Usage: pgdump_offsets.py ARCHIVE            patch in place, print what was done
       pgdump_offsets.py ARCHIVE --toc-end  print the byte offset where the TOC ends (nothing is written)

Archive versions 1.12 to 1.15 (pg_dump 11 to 16) are understood; others are refused.
"""
import sys

K_OFFSET_POS_NOT_SET, K_OFFSET_POS_SET = 1, 2
BLK_DATA, BLK_BLOBS = 1, 3


def main():
    path = sys.argv[1]
    with open(path, 'rb') as f:
        data = f.read()
    pos = 0

    def byte():
        nonlocal pos
        pos += 1
        return data[pos - 1]

    if data[:5] != b'PGDMP':
        sys.exit(f'{path}: not a pg_dump custom-format archive')
    pos = 5
    version = (byte(), byte(), byte())
    int_size, off_size, fmt = byte(), byte(), byte()
    if not (1, 12, 0) <= version <= (1, 15, 0) or fmt != 1:
        sys.exit(f'{path}: archive version {version} format {fmt} is not handled')

    def read_int():
        nonlocal pos
        sign = byte()
        value = int.from_bytes(data[pos:pos + int_size], 'little')
        pos += int_size
        return -value if sign else value

    def read_str():
        nonlocal pos
        n = read_int()
        if n < 0:
            return None
        pos += n
        return data[pos - n:pos]

    if version >= (1, 15, 0):
        byte()  # compression algorithm
    else:
        read_int()  # compression level
    for _ in range(7):
        read_int()  # creation time
    for _ in range(3):
        read_str()  # database name, server version, pg_dump version
    entries = {}
    for _ in range(read_int()):
        dump_id = read_int()
        read_int()  # had a data dumper
        for _ in range(4):
            read_str()  # table oid, oid, tag, description
        read_int()  # section
        for _ in range(5):
            read_str()  # definition, drop statement, copy statement, namespace, tablespace
        if version >= (1, 14, 0):
            read_str()  # table access method
        read_str()  # owner
        read_str()  # with oids ("false")
        while read_str() is not None:  # dependencies
            pass
        entries[dump_id] = (pos, byte())
        pos += off_size
    if len(sys.argv) > 2 and sys.argv[2] == '--toc-end':
        print(pos)
        return

    # Data blocks: a type byte, the dump id, then chunks (length, bytes) up to a zero length.
    starts = {}
    while pos < len(data):
        start = pos
        kind = byte()
        if kind not in (BLK_DATA, BLK_BLOBS):
            break
        starts[read_int()] = start
        if kind == BLK_BLOBS:  # (oid, chunks...)* up to oid 0
            while read_int() != 0:
                while (n := read_int()) != 0:
                    pos += abs(n)
        else:
            while (n := read_int()) != 0:
                pos += abs(n)

    patched = 0
    with open(path, 'r+b') as f:
        for dump_id, (flag_pos, flag) in entries.items():
            if flag == K_OFFSET_POS_NOT_SET and dump_id in starts:
                f.seek(flag_pos)
                f.write(bytes([K_OFFSET_POS_SET]) + starts[dump_id].to_bytes(off_size, 'little'))
                patched += 1
    print(f'{path}: {patched} data offsets written ({len(starts)} data blocks, {len(entries)} TOC entries)')


if __name__ == '__main__':
    main()
