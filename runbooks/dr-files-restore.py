#!/usr/bin/env python3
"""Break-glass restore of a chunked files source of a dr repository, without dr.

Needs only Python >= 3.9 (standard library), `age` (1.0 or newer) and `zstd` on PATH, the repository in a local
directory (for S3, copy it first: `aws s3 cp --recursive s3://BUCKET/PREFIX/ DIR/`), and the age identity.
The format is described in docs/repository-format.md, "Chunked files sources"; the procedure around this script
in runbooks/files-break-glass.md.

  dr-files-restore.py --repo DIR --snapshot ID|latest --source NAME --identity FILE --into TARGET
                      [--path PREFIX] [--dedup-key-file FILE] [--force] [--numeric-owner] [--jobs N]

What it does:
  1. reads snapshots/ID.json, checks the tree object's size and SHA-256 against it, decrypts it (age -d | zstd -d);
  2. decrypts every index object (age -d | zstd -d) and drops those another one supersedes;
  3. reads the tree's chunks from their packs and decompresses them (one zstd -d);
  4. for every pack that holds chunks of the files to restore: checks its size and SHA-256 against the index,
     decrypts it with ONE `age -d`, checks its trailer against the index, and writes each file's zstd frames
     into a staging file (the frames of one file concatenate into one valid zstd stream);
  5. decompresses the staging files with `zstd -d --rm` in batches of at most 500 files (one process per batch,
     never one per file), which checks every frame's XXH64;
  6. moves files into place, creates symlinks and hard links, then applies owners (as root), modes, extended
     attributes and times with nanoseconds; directories' times last, deepest first.

Checks: age authenticates every pack and object; zstd checks every frame's checksum; sizes are compared with the
tree. Chunk ids (HMAC-SHA256 with a key derived from the repository's dedup key) are recomputed and compared
when the dedup key is at hand: from --dedup-key-file, or else decrypted from keys/dedup.age with the identity.
Without it (keys/dedup.age not copied), chunks are NOT checked against their ids: a pack written by someone
holding the repository's public recipients could then substitute a chunk undetected. The script says so.

Exit status 0 when everything was restored; 1 with one line `dr-files-restore: error: ...` otherwise.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

PACK_MAGIC = b"DRPACK01"
TRAILER_ENTRY = struct.Struct("<32sII")  # chunk id, stored_len, plain_len
ZSTD_BATCH = 500
STAGE_NAME = b".dr-files-restore.stage"


class Fail(Exception):
    """An error that ends the restore with one line naming what failed."""


def warn(msg: str):
    print(f"dr-files-restore: warning: {msg}", file=sys.stderr)


def info(msg: str):
    print(f"dr-files-restore: {msg}", file=sys.stderr)


# ----------------------------------------------------------------------------------------------- tools


def run(args, what: str, data=None) -> bytes:
    try:
        done = subprocess.run(args, input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    except FileNotFoundError:
        raise Fail(f"{args[0]} is not installed (needed to read {what})")
    if done.returncode != 0:
        raise Fail(f"{args[0]} failed on {what}: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def age_decrypt(identity: str, path: str, what: str) -> bytes:
    if not os.path.exists(path):
        raise Fail(f"{what} is missing: {path}")
    return run(["age", "-d", "-i", identity, path], what)


def zstd_decompress(data: bytes, what: str) -> bytes:
    return run(["zstd", "-d", "-q", "-c"], what, data)


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------- repository


class Repository:
    def __init__(self, root: str, identity: str):
        self.root = root
        self.identity = identity
        if not os.path.isfile(os.path.join(root, "config.json")):
            raise Fail(f"{root} is not a dr repository (no config.json)")

    def path(self, key: str) -> str:
        return os.path.join(self.root, *key.split("/"))

    def snapshot(self, wanted: str) -> dict:
        snap_dir = self.path("snapshots")
        ids = sorted(n[:-5] for n in os.listdir(snap_dir) if n.endswith(".json") and not n.startswith(".")) \
            if os.path.isdir(snap_dir) else []
        if not ids:
            raise Fail(f"{snap_dir} holds no snapshot")
        if wanted == "latest":
            chosen = ids[-1]
        else:
            matches = [i for i in ids if i.startswith(wanted)]
            if len(matches) != 1:
                raise Fail(f"snapshot {wanted} matches {len(matches)} snapshots in {snap_dir} (give a full id)")
            chosen = matches[0]
        with open(self.path(f"snapshots/{chosen}.json")) as f:
            manifest = json.load(f)
        if manifest.get("id") != chosen:
            raise Fail(f"snapshots/{chosen}.json names another snapshot ({manifest.get('id')}): corrupt")
        if manifest.get("format", 1) > 2:
            raise Fail(f"snapshots/{chosen}.json has format {manifest['format']}, newer than this script knows (2)")
        return manifest

    def checked_object(self, obj: dict) -> str:
        """The path of a manifest object whose size and SHA-256 match the manifest."""
        path = self.path(obj["key"])
        if not os.path.exists(path):
            raise Fail(f"object {obj['key']} is missing from {self.root}")
        if os.path.getsize(path) != obj["stored_size"] or sha256_file(path) != obj["sha256"]:
            raise Fail(f"object {obj['key']} does not match its manifest (size or SHA-256): damaged")
        return path

    def dedup_key(self, key_file):
        """The master dedup key (32 bytes), or None when neither source of it is available."""
        if key_file:
            with open(key_file) as f:
                text, source = f.read().strip(), key_file
        elif os.path.exists(self.path("keys/dedup.age")):
            text, source = age_decrypt(self.identity, self.path("keys/dedup.age"), "keys/dedup.age").decode().strip(), "keys/dedup.age"
        else:
            return None
        try:
            master = bytes.fromhex(text)
        except ValueError:
            master = b""
        if len(master) != 32:
            raise Fail(f"{source} does not hold a dedup key (64 hex digits)")
        chunking_path = self.path("chunking.json")
        if os.path.exists(chunking_path):
            with open(chunking_path) as f:
                expected = json.load(f).get("key_check")
            got = hmac.new(master, b"dr key check v1", hashlib.sha256).digest()[:16].hex()
            if expected != got:
                raise Fail(f"the dedup key in {source} does not belong to this repository (key_check {got}, "
                           f"chunking.json says {expected})")
        return master

    def load_index(self):
        """chunk id (bytes) -> (pack name, offset, stored_len, plain_len), and pack name -> (stored_size, sha256)."""
        index_dir = self.path("index")
        names = sorted(n for n in os.listdir(index_dir) if not n.startswith(".")) if os.path.isdir(index_dir) else []
        if not names:
            raise Fail(f"{index_dir} holds no index object (copy index/ from the repository)")
        objects, superseded = [], set()
        for name in names:
            what = f"index/{name}"
            lines = zstd_decompress(age_decrypt(self.identity, os.path.join(index_dir, name), what), what).splitlines()
            try:
                header = json.loads(lines[0])
                packs = [json.loads(line) for line in lines[1:] if line.strip()]
            except (ValueError, IndexError):
                raise Fail(f"{what} is not a dr index (JSON lines)")
            if header.get("format") != 1:
                raise Fail(f"{what} has format {header.get('format')}, not 1")
            superseded.update(header.get("supersedes", []))
            objects.append((name, packs))
        chunks, packs = {}, {}
        for name, pack_lines in objects:
            stem = name.split(".", 1)[0]
            if {stem, name, f"index/{name}"} & superseded:
                continue
            for p in pack_lines:
                packs.setdefault(p["pack"], (p["stored_size"], p["sha256"]))
                for cid, offset, stored_len, plain_len in p["chunks"]:
                    chunks.setdefault(bytes.fromhex(cid), (p["pack"], offset, stored_len, plain_len))
        return chunks, packs

    def pack_path(self, name: str) -> str:
        return self.path(f"packs/{name[:2]}/{name}.pack.age")

    def read_pack(self, name: str, expected) -> bytes:
        """The checked plaintext of a pack: size and SHA-256 as indexed, trailer as indexed."""
        key = f"packs/{name[:2]}/{name}.pack.age"
        path = self.pack_path(name)
        if not os.path.exists(path):
            raise Fail(f"pack {key} is missing from {self.root} (copy packs/ from the repository)")
        stored_size, sha = expected
        if os.path.getsize(path) != stored_size or sha256_file(path) != sha:
            raise Fail(f"pack {key} does not match the index (size or SHA-256): damaged")
        plain = age_decrypt(self.identity, path, f"pack {key}")
        if len(plain) < 12 or plain[-8:] != PACK_MAGIC:
            raise Fail(f"pack {key} has no DRPACK01 trailer")
        (count,) = struct.unpack("<I", plain[-12:-8])
        start = len(plain) - 12 - count * TRAILER_ENTRY.size
        if start < 0:
            raise Fail(f"pack {key}: its trailer claims {count} chunks, more than it holds")
        return plain, start, count


# ----------------------------------------------------------------------------------------------- tree


def raw(entry: dict, key: str) -> bytes:
    """A name field as bytes: <key>_hex when the name is not UTF-8, else <key>."""
    if key + "_hex" in entry:
        return bytes.fromhex(entry[key + "_hex"])
    return entry[key].encode()


def safe_relative(path: bytes, what: str) -> bytes:
    parts = path.split(b"/")
    if path.startswith(b"/") or any(p in (b"", b".", b"..") for p in parts):
        raise Fail(f"the tree holds an unsafe path {path!r} ({what}): refusing to restore")
    return path


def select(entries, prefix):
    """The entries under PREFIX (a file or a directory), with the directories above it."""
    if not prefix:
        return entries
    prefix = prefix.strip("/").encode()
    ancestors = {b""}
    parts = prefix.split(b"/")
    for i in range(1, len(parts)):
        ancestors.add(b"/".join(parts[:i]))
    chosen = [e for e in entries if e["_path"] in ancestors or e["_path"] == prefix or e["_path"].startswith(prefix + b"/")]
    if not any(e["_path"] == prefix or e["_path"].startswith(prefix + b"/") for e in chosen):
        raise Fail(f"nothing in the snapshot under --path {prefix.decode(errors='replace')}")
    return chosen


# ----------------------------------------------------------------------------------------------- restore


class Restore:
    def __init__(self, repo: Repository, target: str, jobs: int, id_key, numeric_owner: bool, force: bool):
        self.repo = repo
        self.force = force
        self.target = os.fsencode(os.path.abspath(target))
        self.jobs = jobs
        self.id_key = id_key
        self.numeric_owner = numeric_owner
        self.chunks = self.packs = None

    def chunk_location(self, cid: bytes, what: str):
        loc = self.chunks.get(cid)
        if loc is None:
            raise Fail(f"chunk {cid.hex()} of {what} is in no index object: the repository is incomplete")
        return loc

    def read_chunks(self, ids, what: str) -> bytes:
        """Plaintext of a short list of chunks (the tree): their frames, in order, through one zstd -d."""
        by_pack = {}
        for i, cid in enumerate(ids):
            by_pack.setdefault(self.chunk_location(cid, what)[0], []).append(i)
        frames = [None] * len(ids)
        for pack, positions in by_pack.items():
            plain, _, _ = self.repo.read_pack(pack, self.packs[pack])
            for i in positions:
                _, offset, stored_len, _ = self.chunks[ids[i]]
                frames[i] = plain[offset:offset + stored_len]
        data = zstd_decompress(b"".join(frames), what)
        self.check_ids(data, ids, what)
        return data

    def check_ids(self, data: bytes, ids, what: str):
        """Split DATA by the chunks' plain lengths; with the dedup key, compare every chunk's HMAC with its id."""
        pos = 0
        for cid in ids:
            plain_len = self.chunks[cid][3]
            piece = data[pos:pos + plain_len]
            if len(piece) != plain_len:
                raise Fail(f"{what} is shorter than its chunks say")
            if self.id_key is not None and not hmac.compare_digest(
                    hmac.new(self.id_key, piece, hashlib.sha256).digest(), cid):
                pack = self.chunks[cid][0]
                raise Fail(f"chunk {cid.hex()} of {what} in pack packs/{pack[:2]}/{pack}.pack.age does not match its id: "
                           "corrupt or forged")
            pos += plain_len
        if pos != len(data):
            raise Fail(f"{what} is longer than its chunks say")

    def run(self, entries, tree_stats):
        stage = os.path.join(self.target, STAGE_NAME)
        try:
            self.restore_into(entries, tree_stats, stage)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)  # the staged data; what was already in place stays
            raise

    def restore_into(self, entries, tree_stats, stage):
        target = self.target
        if os.path.lexists(target) and not os.path.isdir(target):
            raise Fail(f"{os.fsdecode(target)} exists and is not a directory")
        os.makedirs(target, exist_ok=True)
        if any(e["_path"].split(b"/")[0] == STAGE_NAME for e in entries):
            raise Fail(f"the snapshot holds an entry named {STAGE_NAME.decode()}: restore it by hand")
        shutil.rmtree(stage, ignore_errors=True)
        os.mkdir(stage, 0o700)

        # Directories first (walk order: parents before children), then the files' data.
        for e in entries:
            if e["type"] == "dir" and e["_path"]:
                path = os.path.join(target, e["_path"])
                if self.force and os.path.lexists(path) and not os.path.isdir(path):
                    os.unlink(path)
                os.makedirs(path, 0o700, exist_ok=self.force)
        files = [e for e in entries if e["type"] == "file"]

        # Plan: for every pack, which frames go where in which staging file.
        plan = {}
        for number, e in enumerate(files):
            what = f"file {os.fsdecode(e['_path'])}"
            offset = 0
            for cid_hex in e.get("chunks", []):
                cid = bytes.fromhex(cid_hex)
                pack, pack_offset, stored_len, _ = self.chunk_location(cid, what)
                plan.setdefault(pack, []).append((number, offset, pack_offset, stored_len, cid))
                offset += stored_len
            e["_stage"] = os.path.join(stage, str(number).encode())
            if not e.get("chunks"):
                with open(e["_stage"], "wb"):  # an empty file is complete; the others get their frames below
                    pass
        info(f"{len(files)} files in {len(plan)} packs")

        def fill(pack):
            plain, trailer_start, count = self.repo.read_pack(pack, self.packs[pack])
            trailer = {}
            offset = 0
            for i in range(count):
                cid, stored_len, plain_len = TRAILER_ENTRY.unpack_from(plain, trailer_start + i * TRAILER_ENTRY.size)
                trailer[cid] = (offset, stored_len, plain_len)
                offset += stored_len
            for number, file_offset, pack_offset, stored_len, cid in plan[pack]:
                if trailer.get(cid, (None, None))[:2] != (pack_offset, stored_len):
                    raise Fail(f"pack packs/{pack[:2]}/{pack}.pack.age: its trailer and the index disagree about chunk {cid.hex()}")
                fd = os.open(files[number]["_stage"] + b".zst", os.O_WRONLY | os.O_CREAT, 0o600)
                try:
                    os.pwrite(fd, plain[pack_offset:pack_offset + stored_len], file_offset)
                finally:
                    os.close(fd)

        # Packs in parallel (one age -d each); a file's frames land at fixed offsets, so order does not matter.
        with ThreadPoolExecutor(self.jobs) as pool:
            for _ in pool.map(fill, sorted(plan)):
                pass

        # Decompress in batches of ZSTD_BATCH files: one zstd process per batch.
        compressed = [str(i).encode() + b".zst" for i, e in enumerate(files) if e.get("chunks")]
        batches = [compressed[i:i + ZSTD_BATCH] for i in range(0, len(compressed), ZSTD_BATCH)]

        def decompress(batch):
            done = subprocess.run([b"zstd", b"-d", b"-q", b"--rm", b"-f", b"--"] + batch, cwd=stage,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
            if done.returncode != 0:
                err = done.stderr.decode(errors="replace").strip()
                for name in batch:  # name the restored file, not the staging number
                    if name.decode() in err:
                        path = files[int(name[:-4])]["_path"]
                        raise Fail(f"zstd -d failed on file {os.fsdecode(path)}: {err}")
                raise Fail(f"zstd -d failed: {err}")

        with ThreadPoolExecutor(self.jobs) as pool:
            for _ in pool.map(decompress, batches):
                pass

        # Sizes (and, with the dedup key, every chunk's id), then into place.
        for e in files:
            what = f"file {os.fsdecode(e['_path'])}"
            size = os.path.getsize(e["_stage"])
            if size != e.get("size", 0):
                raise Fail(f"{what}: {size} bytes restored, the tree says {e.get('size', 0)}")
            if self.id_key is not None and e.get("chunks"):
                with open(e["_stage"], "rb") as f:
                    self.check_ids(f.read(), [bytes.fromhex(c) for c in e["chunks"]], what)
            os.rename(e["_stage"], os.path.join(target, e["_path"]))
        os.rmdir(stage)

        for e in entries:
            path = os.path.join(target, e["_path"])
            if self.force and e["type"] in ("symlink", "hardlink") and os.path.lexists(path):
                os.unlink(path)
            if e["type"] == "symlink":
                os.symlink(raw(e, "target"), path)
            elif e["type"] == "hardlink":
                os.link(os.path.join(target, raw(e, "link")), path)

        self.apply_metadata(entries)
        print(f"restored {tree_stats['files']} files, {tree_stats['dirs']} directories, {tree_stats['symlinks']} symlinks, "
              f"{tree_stats['hardlinks']} hard links, {tree_stats['bytes']} bytes into {os.fsdecode(target)}")

    def owner_ids(self, e):
        uid, gid = e["uid"], e["gid"]
        if not self.numeric_owner:
            import grp
            import pwd
            try:
                if "user" in e:
                    uid = pwd.getpwnam(e["user"]).pw_uid
            except KeyError:
                pass
            try:
                if "group" in e:
                    gid = grp.getgrnam(e["group"]).gr_gid
            except KeyError:
                pass
        return uid, gid

    def apply_metadata(self, entries):
        as_root = os.geteuid() == 0
        if not as_root:
            warn("not running as root: owners are not restored (every file belongs to you)")
        xattr_failures = {}
        dirs = []
        for e in entries:
            path = os.path.join(self.target, e["_path"]) if e["_path"] else self.target
            link = e["type"] == "symlink"
            if as_root:
                os.chown(path, *self.owner_ids(e), follow_symlinks=False)
            if e["type"] == "dir":
                dirs.append((e["_path"].count(b"/") + (1 if e["_path"] else 0), path, e))
            elif not link:
                os.chmod(path, e["mode"])  # after chown, which clears setuid and setgid
            for name, value in e.get("xattrs", {}).items():
                try:
                    os.setxattr(path, name, base64.b64decode(value), follow_symlinks=False)
                except OSError as err:
                    xattr_failures.setdefault(name.split(".")[0], []).append(f"{os.fsdecode(e['_path'])}: {err.strerror}")
            ns = e["mtime"][0] * 1_000_000_000 + e["mtime"][1]
            if e["type"] != "dir":
                os.utime(path, ns=(ns, ns), follow_symlinks=False)
        for namespace, failures in xattr_failures.items():
            warn(f"{len(failures)} extended attributes in {namespace}.* not restored, first: {failures[0]}")
        # Directories' modes and times last, deepest first: creating anything inside a directory moves its
        # mtime, and a read-only directory (0555) would stop a non-root restore from finishing its contents.
        for _, path, e in sorted(dirs, key=lambda d: -d[0]):
            os.chmod(path, e["mode"])
            ns = e["mtime"][0] * 1_000_000_000 + e["mtime"][1]
            os.utime(path, ns=(ns, ns), follow_symlinks=False)


# ----------------------------------------------------------------------------------------------- main


def restore(a):
    for tool in ("age", "zstd"):
        if shutil.which(tool) is None:
            raise Fail(f"{tool} is not installed (apt-get install age zstd)")
    if not os.access(a.identity, os.R_OK):
        raise Fail(f"cannot read the identity {a.identity}")
    target = os.path.abspath(a.into)
    if os.path.isdir(target) and os.listdir(target) and not a.force:
        raise Fail(f"{target} is not empty (pass --force to restore into it anyway)")

    repo = Repository(a.repo, a.identity)
    manifest = repo.snapshot(a.snapshot)
    source = next((s for s in manifest.get("sources", []) if s.get("name") == a.source), None)
    if source is None:
        names = ", ".join(s.get("name", "?") for s in manifest.get("sources", []))
        raise Fail(f"snapshot {manifest['id']} has no source {a.source} (it has: {names})")
    if source.get("format") != "chunked":
        raise Fail(f"source {a.source} of snapshot {manifest['id']} is a tar source: restore it with "
                   "age -d | zstd -d | tar -x (runbooks/break-glass.md, step 8)")
    tree_obj = next((o for o in source["objects"] if o.get("role") == "tree"), None)
    if tree_obj is None:
        raise Fail(f"source {a.source} of snapshot {manifest['id']} lists no tree object")
    what = f"object {tree_obj['key']}"
    tree_ref = json.loads(zstd_decompress(age_decrypt(a.identity, repo.checked_object(tree_obj), what), what))
    if tree_ref.get("format") != 1:
        raise Fail(f"{what} has format {tree_ref.get('format')}, not 1")

    master = repo.dedup_key(a.dedup_key_file)
    id_key = hmac.new(master, b"dr chunk id v1", hashlib.sha256).digest() if master else None
    if id_key is None:
        warn("no dedup key (no --dedup-key-file, no keys/dedup.age): chunks are checked by age and zstd only, "
             "not against their ids")

    r = Restore(repo, a.into, a.jobs, id_key, a.numeric_owner, a.force)
    r.chunks, r.packs = repo.load_index()
    tree_ids = [bytes.fromhex(c) for c in tree_ref["chunks"]]
    tree = r.read_chunks(tree_ids, f"the tree of {a.source} in snapshot {manifest['id']}")
    if len(tree) != tree_ref.get("plain_size", len(tree)):
        raise Fail(f"the tree of {a.source} is {len(tree)} bytes, {what} says {tree_ref['plain_size']}")

    entries, first_of = [], {}
    for number, line in enumerate(tree.splitlines(), 1):
        try:
            e = json.loads(line)
        except ValueError:
            raise Fail(f"line {number} of the tree of {a.source} is not JSON")
        e["_path"] = raw(e, "path")
        if e["_path"]:
            safe_relative(e["_path"], "path")
        if e["type"] not in ("file", "dir", "symlink", "hardlink"):
            raise Fail(f"the tree holds an entry of unknown type {e['type']!r} ({os.fsdecode(e['_path'])})")
        if e["type"] == "file":
            first_of[e["_path"]] = e
        elif e["type"] == "hardlink":
            first = first_of.get(safe_relative(raw(e, "link"), "hard link"))
            if first is None:
                raise Fail(f"hard link {os.fsdecode(e['_path'])} points to {os.fsdecode(raw(e, 'link'))}, no earlier file")
            e["_first"] = first
        entries.append(e)
    if len(entries) != tree_ref.get("entries", len(entries)):
        raise Fail(f"the tree of {a.source} has {len(entries)} entries, {what} says {tree_ref['entries']}")
    if not entries or entries[0]["_path"] != b"" or entries[0]["type"] != "dir":
        raise Fail(f"the tree of {a.source} does not start with its root directory")

    chosen = select(entries, a.path)
    chosen_paths = {e["_path"] for e in chosen}
    for e in chosen:
        if e["type"] == "hardlink" and e["_first"]["_path"] not in chosen_paths:
            # Its data lives under a path outside --path: restore it as a file with the first path's data.
            e.update({"type": "file", "size": e["_first"].get("size", 0), "chunks": e["_first"].get("chunks", [])})
    stats = {"files": 0, "dirs": 0, "symlinks": 0, "hardlinks": 0, "bytes": 0}
    for e in chosen:
        key = {"file": "files", "dir": "dirs", "symlink": "symlinks", "hardlink": "hardlinks"}[e["type"]]
        stats[key] += 1
        stats["bytes"] += e.get("size", 0)
    stats["dirs"] -= 1  # the root is the target itself
    info(f"snapshot {manifest['id']}, source {a.source}: {len(chosen)} of {len(entries)} entries; "
         f"chunk ids {'checked' if id_key else 'NOT checked'}")
    r.run(chosen, stats)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", required=True, help="the repository directory (a local copy for S3)")
    p.add_argument("--snapshot", required=True, help="a snapshot id, a unique prefix of one, or latest")
    p.add_argument("--source", required=True, help="the files source's name")
    p.add_argument("--identity", required=True, help="the age identity file")
    p.add_argument("--into", required=True, help="the target directory (created; must be empty without --force)")
    p.add_argument("--path", help="restore only this file or directory (a path relative to the source root)")
    p.add_argument("--dedup-key-file", help="the dedup key, to check chunk ids (default: from keys/dedup.age)")
    p.add_argument("--force", action="store_true", help="restore into a non-empty directory")
    p.add_argument("--numeric-owner", action="store_true", help="use the stored uid/gid, not the names")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="packs and zstd batches at a time")
    a = p.parse_args()
    try:
        restore(a)
    except Fail as err:
        print(f"dr-files-restore: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"dr-files-restore: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
