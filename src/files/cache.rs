//! The per-source files cache: what lets a backup of an unchanged tree skip reading its files.
//!
//! `<cache dir>/<repository id>/<source>.cache.zst`, mode 0600: zstd of JSON lines, a header then one line per
//! regular file in walk order with its path, size, mtime, ctime, inode and chunk ids. Both the walk and the
//! cache are in walk order, so the next backup reads them side by side (a merge-join): memory stays constant
//! whatever the number of files. The cache holds paths and chunk ids, no contents, on the host that holds the
//! contents anyway, so it is not encrypted.
//!
//! It is only ever a shortcut: a missing, foreign (another repository, key, chunking or root), cut or corrupt
//! cache is ignored with a debug line, and the files are read again (their chunks then deduplicate, so it costs
//! time, not uploads). A reused chunk list must still be checked against the repository's index by the caller,
//! so that a chunk a prune removed is uploaded again rather than referenced.

use std::cmp::Ordering;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::object_info::ObjectInfo;
use super::tree::walk_order;
use super::walk::FileStat;
use crate::chunks::ChunkId;

const FORMAT: u32 = 1;

/// `<dir>/<repository id>/<source>.cache.zst`.
pub fn cache_file_path(dir: &Path, repository_id: &str, source: &str) -> PathBuf {
    dir.join(repository_id).join(format!("{source}.cache.zst"))
}

/// The cache directory when `[cache] dir` is not set: `DR_CACHE_DIR`, else `$XDG_CACHE_HOME/dr`, else
/// `$HOME/.cache/dr`, else `/var/cache/dr` (a service account without a home).
pub fn default_cache_dir() -> PathBuf {
    cache_dir_from(|name| std::env::var_os(name))
}

fn cache_dir_from(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> PathBuf {
    let set = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    set("DR_CACHE_DIR")
        .or_else(|| set("XDG_CACHE_HOME").map(|d| d.join("dr")))
        .or_else(|| set("HOME").map(|d| d.join(".cache/dr")))
        .unwrap_or_else(|| PathBuf::from("/var/cache/dr"))
}

/// What a cache was made for: any difference and its chunk lists mean nothing (other ids, other cut points,
/// other files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheHeader {
    pub repository: String,
    pub source: String,
    pub root: String,
    pub key_check: String,
    /// SHA-256 (hex) of the repository's `chunking.json`.
    pub chunking: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct HeaderLine {
    format: u32,
    #[serde(flatten)]
    header: CacheHeader,
}

#[derive(Debug, Serialize, Deserialize)]
struct CacheLine {
    p: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ph: Option<String>,
    s: u64,
    m: (i64, u32),
    c: (i64, u32),
    i: u64,
    k: Vec<String>,
    /// An object of a bucket source: its ETag (compared too) and the metadata the tree keeps, which a listing
    /// does not give.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    o: Option<ObjectInfo>,
}

impl CacheLine {
    fn path(&self) -> Option<Vec<u8>> {
        match &self.ph {
            Some(h) => hex::decode(h).ok(),
            None => Some(self.p.as_bytes().to_vec()),
        }
    }
}

/// What the cache holds for an unchanged file: its chunks, and an object's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached {
    pub chunks: Vec<ChunkId>,
    pub object: Option<ObjectInfo>,
}

/// A cache being read beside the walk.
pub struct CacheReader {
    lines: Box<dyn BufRead + Send>,
    file: PathBuf,
    /// The next cached file not yet passed by the walk.
    next: Option<(Vec<u8>, CacheLine)>,
    ended: bool,
    buffer: Vec<u8>,
}

impl std::fmt::Debug for CacheReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheReader").field("file", &self.file).field("ended", &self.ended).finish()
    }
}

impl CacheReader {
    /// The cache at `path` if it is there, readable and made for `expected`; `None` (and a debug line) else.
    pub fn open(path: &Path, expected: &CacheHeader) -> Option<CacheReader> {
        let ignored = |why: String| {
            tracing::debug!("files cache {} not used: {why}", path.display());
            None
        };
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return ignored("there is none yet".to_string()),
            Err(e) => return ignored(e.to_string()),
        };
        let decoder = match zstd::stream::read::Decoder::new(file) {
            Ok(decoder) => decoder,
            Err(e) => return ignored(e.to_string()),
        };
        let mut lines = BufReader::new(decoder);
        let mut header = Vec::new();
        if let Err(e) = lines.read_until(b'\n', &mut header) {
            return ignored(e.to_string());
        }
        match serde_json::from_slice::<HeaderLine>(&header) {
            Ok(line) if line.format == FORMAT && &line.header == expected => {}
            Ok(line) if line.format != FORMAT => return ignored(format!("format {}", line.format)),
            Ok(line) => return ignored(format!("made for {:?}", line.header)),
            Err(e) => return ignored(format!("bad header: {e}")),
        }
        Some(CacheReader {
            lines: Box::new(lines),
            file: path.to_path_buf(),
            next: None,
            ended: false,
            buffer: Vec::new(),
        })
    }

    /// Reads the next cached file into `next`; a read or parse failure ends the cache there.
    fn advance(&mut self) {
        self.buffer.clear();
        let read = match self.lines.read_until(b'\n', &mut self.buffer) {
            Ok(0) => {
                self.ended = true;
                return;
            }
            Ok(n) => n,
            Err(e) => return self.corrupt(&e.to_string()),
        };
        if self.buffer[read - 1] != b'\n' {
            return self.corrupt("its last line is cut short");
        }
        match serde_json::from_slice::<CacheLine>(&self.buffer[..read - 1]) {
            Ok(line) => match line.path() {
                Some(path) => self.next = Some((path, line)),
                None => self.corrupt("a bad ph"),
            },
            Err(e) => self.corrupt(&e.to_string()),
        }
    }

    fn corrupt(&mut self, why: &str) {
        tracing::debug!("files cache {} is corrupt from here on, not used further: {why}", self.file.display());
        self.ended = true;
        self.next = None;
    }

    /// The cached chunk ids of the regular file at `path`, when its size, mtime, ctime and inode are those
    /// cached, and for an object of a bucket (`etag` given) its ETag too; with the object's cached metadata.
    /// Called with the walk's files in walk order: cached files the walk passed (deleted since) are skipped,
    /// files not cached (new) find nothing.
    pub fn lookup(&mut self, path: &[u8], stat: &FileStat, etag: Option<&str>) -> Option<Cached> {
        loop {
            if self.next.is_none() {
                if self.ended {
                    return None;
                }
                self.advance();
                continue;
            }
            let (cached_path, _) = self.next.as_ref()?;
            match walk_order(cached_path, path) {
                Ordering::Less => self.next = None,
                Ordering::Greater => return None,
                Ordering::Equal => {
                    let (_, line) = self.next.take()?;
                    let unchanged = (line.s, line.m, line.c, line.i) == (stat.size, stat.mtime, stat.ctime, stat.ino)
                        && etag == line.o.as_ref().map(|o| o.etag.as_str());
                    if !unchanged {
                        return None;
                    }
                    let chunks = line.k.iter().map(|k| k.parse().ok()).collect::<Option<Vec<ChunkId>>>()?;
                    return Some(Cached { chunks, object: line.o });
                }
            }
        }
    }
}

/// A new cache being written during a backup; committed (renamed into place) only once the snapshot is, and
/// discarded if dropped, so a failed backup keeps the previous cache.
pub struct CacheWriter {
    encoder: zstd::stream::write::Encoder<'static, BufWriter<File>>,
    temp: tempfile::TempPath,
    path: PathBuf,
    last: Option<Vec<u8>>,
}

impl std::fmt::Debug for CacheWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheWriter").field("path", &self.path).finish()
    }
}

impl CacheWriter {
    /// Starts a temporary file (mode 0600) next to `path`, creating the directory (0700) if needed.
    pub fn create(path: &Path, header: &CacheHeader) -> io::Result<CacheWriter> {
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        let (file, temp) = tempfile::Builder::new().prefix(".dr-cache-").tempfile_in(dir)?.into_parts();
        // Level 1: the cache is written whole on every backup and its lines are mostly hex chunk ids, which no
        // level shrinks much; level 3 had been 4 % of the first backup of 200,000 files.
        let mut encoder = zstd::stream::write::Encoder::new(BufWriter::new(file), 1)?;
        encoder.include_checksum(true)?;
        serde_json::to_writer(&mut encoder, &HeaderLine { format: FORMAT, header: header.clone() })?;
        encoder.write_all(b"\n")?;
        Ok(CacheWriter { encoder, temp, path: path.to_path_buf(), last: None })
    }

    /// Records a file read at `read_at` (when its read began). Left out: a file (not an object, whose ETag
    /// tells) whose mtime is within a second of `read_at` (or later), because a write in that same second may not have moved the mtime the next
    /// backup compares ("racy clean", as git has it), and a file out of walk order (the reader needs the order;
    /// the caller adds files in walk order).
    pub fn add(
        &mut self,
        path: &[u8],
        stat: &FileStat,
        chunks: &[ChunkId],
        object: Option<&ObjectInfo>,
        read_at: SystemTime,
    ) -> io::Result<()> {
        let read_at_ns = read_at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128);
        let mtime_ns = i128::from(stat.mtime.0) * 1_000_000_000 + i128::from(stat.mtime.1);
        // An object's ETag changes with every write of other bytes, whatever the clock says: no racy objects.
        if object.is_none() && mtime_ns > read_at_ns - 1_000_000_000 {
            return Ok(());
        }
        if self.last.as_deref().is_some_and(|last| walk_order(last, path) != Ordering::Less) {
            tracing::debug!("files cache: {} out of walk order, not cached", String::from_utf8_lossy(path));
            return Ok(());
        }
        let (p, ph) = match std::str::from_utf8(path) {
            Ok(text) => (text.to_string(), None),
            Err(_) => (String::from_utf8_lossy(path).into_owned(), Some(hex::encode(path))),
        };
        let line = CacheLine {
            p,
            ph,
            s: stat.size,
            m: stat.mtime,
            c: stat.ctime,
            i: stat.ino,
            k: chunks.iter().map(ChunkId::to_string).collect(),
            o: object.cloned(),
        };
        serde_json::to_writer(&mut self.encoder, &line)?;
        self.encoder.write_all(b"\n")?;
        self.last = Some(path.to_vec());
        Ok(())
    }

    /// Finishes the file, syncs it and renames it over the previous cache.
    pub fn commit(self) -> io::Result<()> {
        let file = self.encoder.finish()?.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        self.temp.persist(&self.path).map_err(|e| e.error)?;
        let dir = self.path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        super::atomic::sync_directory(dir)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    fn header() -> CacheHeader {
        CacheHeader {
            repository: "f9d7".into(),
            source: "uploads".into(),
            root: "/srv/uploads".into(),
            key_check: "00".repeat(16),
            chunking: "11".repeat(32),
        }
    }

    fn stat(ino: u64) -> FileStat {
        FileStat { dev: 1, ino, size: 100, mtime: (1_700_000_000, 5), ctime: (1_700_000_001, 6), nlink: 1 }
    }

    fn long_after() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    /// A cache at `path` with the given files (in walk order).
    fn write(path: &Path, files: &[(&[u8], FileStat, u8)]) {
        let mut writer = CacheWriter::create(path, &header()).unwrap();
        for (p, s, id) in files {
            writer.add(p, s, &[ChunkId([*id; 32]), ChunkId([id + 1; 32])], None, long_after()).unwrap();
        }
        writer.commit().unwrap();
    }

    #[test]
    fn an_unchanged_file_hits_and_any_change_misses() {
        let dir = tempfile::tempdir().unwrap();
        let path = cache_file_path(dir.path(), "f9d7", "uploads");
        write(
            &path,
            &[(b"a", stat(1), 1), (b"b", stat(2), 3), (b"c", stat(3), 5), (b"d", stat(4), 7), (b"e", stat(5), 9)],
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let mut reader = CacheReader::open(&path, &header()).unwrap();
        assert_eq!(
            reader.lookup(b"a", &stat(1), None).map(|c| c.chunks),
            Some(vec![ChunkId([1; 32]), ChunkId([2; 32])])
        );
        assert_eq!(reader.lookup(b"b", &FileStat { size: 99, ..stat(2) }, None).map(|c| c.chunks), None, "size");
        assert_eq!(
            reader.lookup(b"c", &FileStat { mtime: (1_700_000_000, 6), ..stat(3) }, None).map(|c| c.chunks),
            None,
            "mtime"
        );
        assert_eq!(
            reader.lookup(b"d", &FileStat { ctime: (1_700_000_002, 6), ..stat(4) }, None).map(|c| c.chunks),
            None,
            "ctime"
        );
        assert_eq!(reader.lookup(b"e", &stat(6), None).map(|c| c.chunks), None, "inode");
        assert_eq!(reader.lookup(b"f", &stat(7), None).map(|c| c.chunks), None, "past the end");
    }

    #[test]
    fn the_merge_join_passes_removed_files_and_misses_added_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.cache.zst");
        // Walk order: `a/x` before `a-b` (a directory's contents before its later siblings).
        write(&path, &[(b"a/removed", stat(1), 1), (b"a/x", stat(2), 3), (b"a-b", stat(3), 5), (b"z\xff", stat(4), 7)]);
        let mut reader = CacheReader::open(&path, &header()).unwrap();
        assert_eq!(reader.lookup(b"a/new", &stat(9), None).map(|c| c.chunks), None);
        assert_eq!(
            reader.lookup(b"a/x", &stat(2), None).map(|c| c.chunks),
            Some(vec![ChunkId([3; 32]), ChunkId([4; 32])])
        );
        assert_eq!(reader.lookup(b"a-a", &stat(9), None).map(|c| c.chunks), None, "added between two cached files");
        assert_eq!(
            reader.lookup(b"a-b", &stat(3), None).map(|c| c.chunks),
            Some(vec![ChunkId([5; 32]), ChunkId([6; 32])])
        );
        assert_eq!(
            reader.lookup(b"z\xff", &stat(4), None).map(|c| c.chunks),
            Some(vec![ChunkId([7; 32]), ChunkId([8; 32])]),
            "non-UTF-8 path"
        );
    }

    #[test]
    fn an_object_hits_only_with_its_etag_and_gives_back_its_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.cache.zst");
        let info =
            ObjectInfo { etag: "\"e1\"".into(), content_type: Some("image/jpeg".into()), ..ObjectInfo::default() };
        let mut writer = CacheWriter::create(&path, &header()).unwrap();
        writer.add(b"a.jpg", &stat(0), &[ChunkId([1; 32])], Some(&info), long_after()).unwrap();
        writer.add(b"b.jpg", &stat(0), &[ChunkId([2; 32])], Some(&info), long_after()).unwrap();
        writer.add(b"c.jpg", &stat(0), &[ChunkId([3; 32])], Some(&info), long_after()).unwrap();
        writer.commit().unwrap();
        let mut reader = CacheReader::open(&path, &header()).unwrap();
        let hit = reader.lookup(b"a.jpg", &stat(0), Some("\"e1\"")).unwrap();
        assert_eq!((hit.chunks, hit.object), (vec![ChunkId([1; 32])], Some(info)));
        assert_eq!(reader.lookup(b"b.jpg", &stat(0), Some("\"e2\"")), None, "another ETag: replaced");
        assert_eq!(reader.lookup(b"c.jpg", &stat(0), None), None, "a file where an object was");
    }

    #[test]
    fn racy_files_are_not_cached() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.cache.zst");
        let mut writer = CacheWriter::create(&path, &header()).unwrap();
        let mtime = UNIX_EPOCH + Duration::new(1_700_000_000, 5);
        writer.add(b"a", &stat(1), &[ChunkId([1; 32])], None, mtime + Duration::from_millis(999)).unwrap();
        writer.add(b"b", &stat(2), &[ChunkId([2; 32])], None, mtime - Duration::from_secs(5)).unwrap();
        writer.add(b"c", &stat(3), &[ChunkId([3; 32])], None, mtime + Duration::from_millis(1001)).unwrap();
        writer.commit().unwrap();
        let mut reader = CacheReader::open(&path, &header()).unwrap();
        assert_eq!(reader.lookup(b"a", &stat(1), None).map(|c| c.chunks), None, "read within a second of its mtime");
        assert_eq!(reader.lookup(b"b", &stat(2), None).map(|c| c.chunks), None, "mtime after the read");
        assert_eq!(reader.lookup(b"c", &stat(3), None).map(|c| c.chunks), Some(vec![ChunkId([3; 32])]));
    }

    #[test]
    fn a_foreign_missing_cut_or_corrupt_cache_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.cache.zst");
        assert!(CacheReader::open(&path, &header()).is_none(), "missing");
        let files: Vec<(Vec<u8>, FileStat)> =
            (0..2000u64).map(|i| (format!("f{i:05}").into_bytes(), stat(i))).collect();
        let as_refs: Vec<(&[u8], FileStat, u8)> = files.iter().map(|(p, s)| (&p[..], *s, 1)).collect();
        write(&path, &as_refs);
        for other in [
            CacheHeader { repository: "other".into(), ..header() },
            CacheHeader { key_check: "ff".repeat(16), ..header() },
            CacheHeader { chunking: "22".repeat(32), ..header() },
            CacheHeader { root: "/elsewhere".into(), ..header() },
        ] {
            assert!(CacheReader::open(&path, &other).is_none(), "{other:?}");
        }
        let bytes = fs::read(&path).unwrap();
        // Cut: what could be read before the cut may be used, then nothing; never an error or a panic.
        fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let mut reader = CacheReader::open(&path, &header()).unwrap();
        let hits = files.iter().filter(|(p, s)| reader.lookup(p, s, None).map(|c| c.chunks).is_some()).count();
        assert!(hits < files.len(), "{hits}");
        // Garbage: no cache at all.
        fs::write(&path, b"not zstd at all").unwrap();
        assert!(CacheReader::open(&path, &header()).is_none());
        let mut flipped = bytes.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0xff;
        fs::write(&path, &flipped).unwrap();
        if let Some(mut reader) = CacheReader::open(&path, &header()) {
            for (p, s) in &files {
                let _ = reader.lookup(p, s, None).map(|c| c.chunks);
            }
        }
    }

    #[test]
    fn a_dropped_writer_leaves_the_previous_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/c.cache.zst");
        write(&path, &[(b"a", stat(1), 1)]);
        let mut writer = CacheWriter::create(&path, &header()).unwrap();
        writer.add(b"b", &stat(2), &[ChunkId([2; 32])], None, long_after()).unwrap();
        drop(writer);
        assert_eq!(fs::read_dir(dir.path().join("sub")).unwrap().count(), 1, "no temporary file left");
        let mut reader = CacheReader::open(&path, &header()).unwrap();
        assert!(reader.lookup(b"a", &stat(1), None).map(|c| c.chunks).is_some());
    }

    #[test]
    fn the_default_directory_follows_the_environment() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            cache_dir_from(move |name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.into()))
        };
        assert_eq!(env(&[("DR_CACHE_DIR", "/c"), ("HOME", "/h")]), PathBuf::from("/c"));
        assert_eq!(env(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/h")]), PathBuf::from("/x/dr"));
        assert_eq!(env(&[("XDG_CACHE_HOME", ""), ("HOME", "/h")]), PathBuf::from("/h/.cache/dr"));
        assert_eq!(env(&[]), PathBuf::from("/var/cache/dr"));
    }
}
