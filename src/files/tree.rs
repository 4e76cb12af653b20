//! The tree of a chunked files source: one JSON line per entry, in walk order (docs: SPEC "Tree").
//!
//! It is the whole description of the source in a snapshot: paths, kinds, metadata kept exactly (modes with
//! setuid/sticky, owners by id and name, mtimes to the nanosecond, xattrs) and, for files, the chunk ids of
//! their contents. JSON lines rather than a binary format so that a person with `jq` (and the break-glass
//! script) can read it; the bytes are then chunked like file data, so an unchanged region of a large tree
//! deduplicates from one snapshot to the next.
//!
//! Names that are not UTF-8 are kept exactly: `path` (and `target`, `link`) then hold a lossy rendering for
//! people, and `path_hex` (`target_hex`, `link_hex`) the bytes, as the tar index does.

use crate::chunks::ChunkId;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::io::{self, BufRead, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::index::Incomplete;
use super::object_info::ObjectInfo;
use crate::error::{Error, Result};

/// One entry of a tree: the source root itself (empty path), a directory, a file, a symlink or a hard link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEntry {
    /// Relative to the source root, `/`-separated, as bytes (names need not be UTF-8); the root is empty.
    pub path: Vec<u8>,
    pub kind: TreeKind,
    /// Permission bits including setuid, setgid and sticky (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// The owner's name on the backed-up host, when it has one: a restore on another host maps by name.
    pub user: Option<String>,
    pub group: Option<String>,
    /// Modification time: seconds since the epoch and nanoseconds.
    pub mtime: (i64, u32),
    /// A file's stored size (the bytes read, for a file that changed while it was read); 0 otherwise.
    pub size: u64,
    /// A file's chunk ids, in order; empty otherwise (a hard link's data is its first path's).
    pub chunks: Vec<ChunkId>,
    /// Extended attributes, sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Set when the file changed while it was read (see [`Incomplete`]).
    pub incomplete: Option<Incomplete>,
    /// An object of a bucket source: its ETag and the headers a restore into a bucket puts back. Such an entry
    /// has no owner (uid and gid 0, no names): a restore into a directory leaves it to the restoring user.
    pub object: Option<ObjectInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeKind {
    File,
    Dir,
    /// The link's target, as stored in the link (never followed).
    Symlink {
        target: Vec<u8>,
    },
    /// A further path of a file with several links: `link` is the path of the inode's first entry in walk
    /// order, which holds the data.
    HardLink {
        link: Vec<u8>,
    },
}

impl TreeEntry {
    /// The path as a relative filesystem path (empty for the root).
    pub fn relative_path(&self) -> &Path {
        Path::new(std::ffi::OsStr::from_bytes(&self.path))
    }

    pub fn is_root(&self) -> bool {
        self.path.is_empty()
    }

    /// The path for messages (lossy when not UTF-8; `.` for the root).
    pub fn display_path(&self) -> String {
        if self.path.is_empty() { ".".to_string() } else { String::from_utf8_lossy(&self.path).into_owned() }
    }
}

/// Orders two relative paths as the walk yields them: depth-first, siblings by name bytes, a directory before
/// its contents. This is byte order with `/` sorting before every other byte (`a/b` before `a-c`), which plain
/// byte order is not; the cache's merge-join and the tree writer's order check rely on it.
pub fn walk_order(a: &[u8], b: &[u8]) -> Ordering {
    let key = |c: &u8| if *c == b'/' { 0 } else { *c };
    a.iter().map(key).cmp(b.iter().map(key))
}

/// The JSON line, field order as in the spec.
#[derive(Debug, Serialize, Deserialize)]
struct Line {
    path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path_hex: Option<String>,
    #[serde(rename = "type")]
    kind: LineKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target_hex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    link: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    link_hex: Option<String>,
    mode: u32,
    uid: u32,
    gid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    group: Option<String>,
    mtime: (i64, u32),
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chunks: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    xattrs: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    incomplete: Option<Incomplete>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    object: Option<ObjectInfo>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum LineKind {
    File,
    Dir,
    Symlink,
    Hardlink,
}

/// Text for JSON plus the exact bytes in hex when they are not UTF-8.
fn text_and_hex(bytes: &[u8]) -> (String, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (text.to_string(), None),
        Err(_) => (String::from_utf8_lossy(bytes).into_owned(), Some(hex::encode(bytes))),
    }
}

fn bytes_of(text: Option<String>, hex_text: Option<String>, field: &str) -> std::result::Result<Vec<u8>, String> {
    match (hex_text, text) {
        (Some(h), _) => hex::decode(&h).map_err(|e| format!("{field}_hex is not hex: {e}")),
        (None, Some(t)) => Ok(t.into_bytes()),
        (None, None) => Err(format!("no {field}")),
    }
}

impl From<&TreeEntry> for Line {
    fn from(e: &TreeEntry) -> Line {
        let (path, path_hex) = text_and_hex(&e.path);
        let mut line = Line {
            path,
            path_hex,
            kind: LineKind::File,
            target: None,
            target_hex: None,
            link: None,
            link_hex: None,
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
            user: e.user.clone(),
            group: e.group.clone(),
            mtime: e.mtime,
            size: None,
            chunks: None,
            // A name that is not UTF-8 cannot be a JSON key: the walk leaves such attributes out (and says so).
            xattrs: e
                .xattrs
                .iter()
                .filter_map(|(name, value)| {
                    let name = String::from_utf8(name.clone()).ok()?;
                    Some((name, base64::engine::general_purpose::STANDARD.encode(value)))
                })
                .collect(),
            incomplete: e.incomplete,
            object: e.object.clone(),
        };
        match &e.kind {
            TreeKind::File => {
                line.size = Some(e.size);
                line.chunks = Some(e.chunks.iter().map(ChunkId::to_string).collect());
            }
            TreeKind::Dir => line.kind = LineKind::Dir,
            TreeKind::Symlink { target } => {
                line.kind = LineKind::Symlink;
                let (text, hex) = text_and_hex(target);
                (line.target, line.target_hex) = (Some(text), hex);
            }
            TreeKind::HardLink { link } => {
                line.kind = LineKind::Hardlink;
                let (text, hex) = text_and_hex(link);
                (line.link, line.link_hex) = (Some(text), hex);
            }
        }
        line
    }
}

impl TryFrom<Line> for TreeEntry {
    type Error = String;

    fn try_from(line: Line) -> std::result::Result<TreeEntry, String> {
        if line.mtime.1 >= 1_000_000_000 {
            return Err(format!("mtime nanoseconds {} out of range", line.mtime.1));
        }
        let path = bytes_of(Some(line.path), line.path_hex, "path")?;
        let kind = match line.kind {
            LineKind::File => TreeKind::File,
            LineKind::Dir => TreeKind::Dir,
            LineKind::Symlink => TreeKind::Symlink { target: bytes_of(line.target, line.target_hex, "target")? },
            LineKind::Hardlink => TreeKind::HardLink { link: bytes_of(line.link, line.link_hex, "link")? },
        };
        let (size, chunks) = match (&kind, line.size, line.chunks) {
            (TreeKind::File, Some(size), Some(chunks)) => {
                let ids = chunks
                    .iter()
                    .map(|c| c.parse::<ChunkId>().map_err(|_| format!("chunk id {c:?} is not 64 lowercase hex")))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                (size, ids)
            }
            (TreeKind::File, _, _) => return Err("a file without size or chunks".to_string()),
            (_, None, None) => (0, Vec::new()),
            _ => return Err("size or chunks on an entry that is not a file".to_string()),
        };
        let xattrs = line
            .xattrs
            .into_iter()
            .map(|(name, value)| {
                let value = base64::engine::general_purpose::STANDARD
                    .decode(&value)
                    .map_err(|e| format!("xattr {name:?} is not base64: {e}"))?;
                Ok((name.into_bytes(), value))
            })
            .collect::<std::result::Result<Vec<_>, String>>()?;
        Ok(TreeEntry {
            path,
            kind,
            mode: line.mode,
            uid: line.uid,
            gid: line.gid,
            user: line.user,
            group: line.group,
            mtime: line.mtime,
            size,
            chunks,
            xattrs,
            incomplete: line.incomplete,
            object: line.object,
        })
    }
}

/// One JSON line (with its newline) for `entry`.
pub fn entry_line(entry: &TreeEntry) -> Vec<u8> {
    // Serializing plain strings, numbers and maps of strings cannot fail.
    let mut line = serde_json::to_vec(&Line::from(entry)).unwrap_or_default();
    line.push(b'\n');
    line
}

/// Counts of what a tree holds (the snapshot's `tree.json.age` carries them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeCounts {
    pub entries: u64,
    /// Regular files (hard links not counted again).
    pub files: u64,
    /// Bytes of those files.
    pub bytes: u64,
}

/// Writes tree lines, refusing entries out of walk order: the cache's merge-join and a restore (a directory
/// before its contents, a hard link after its first path) rely on that order, so a bug upstream fails here
/// instead of producing a tree that restores wrong.
#[derive(Debug)]
pub struct TreeWriter<W: Write> {
    out: W,
    last: Option<Vec<u8>>,
    counts: TreeCounts,
}

impl<W: Write> TreeWriter<W> {
    pub fn new(out: W) -> TreeWriter<W> {
        TreeWriter { out, last: None, counts: TreeCounts::default() }
    }

    pub fn write(&mut self, entry: &TreeEntry) -> io::Result<()> {
        if let Some(last) = &self.last
            && walk_order(last, &entry.path) != Ordering::Less
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "tree entry {:?} out of walk order (after {:?})",
                    entry.display_path(),
                    String::from_utf8_lossy(last)
                ),
            ));
        }
        self.out.write_all(&entry_line(entry))?;
        self.last = Some(entry.path.clone());
        self.counts.entries += 1;
        if entry.kind == TreeKind::File {
            self.counts.files += 1;
            self.counts.bytes += entry.size;
        }
        Ok(())
    }

    pub fn counts(&self) -> TreeCounts {
        self.counts
    }

    /// Flushes and hands back the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Reads tree lines back. `key` names the tree in errors (the snapshot's tree object); a bad line is corruption
/// of that object and the error gives its line number.
#[derive(Debug)]
pub struct TreeReader<R: BufRead> {
    input: R,
    key: String,
    line: u64,
    buffer: Vec<u8>,
    failed: bool,
}

impl<R: BufRead> TreeReader<R> {
    pub fn new(input: R, key: &str) -> TreeReader<R> {
        TreeReader { input, key: key.to_string(), line: 0, buffer: Vec::new(), failed: false }
    }

    fn corrupt(&self, reason: impl std::fmt::Display) -> Error {
        Error::ObjectCorrupt { key: self.key.clone(), reason: format!("tree line {}: {reason}", self.line) }
    }
}

impl<R: BufRead> Iterator for TreeReader<R> {
    type Item = Result<TreeEntry>;

    fn next(&mut self) -> Option<Result<TreeEntry>> {
        if self.failed {
            return None;
        }
        self.buffer.clear();
        self.line += 1;
        let read = match self.input.read_until(b'\n', &mut self.buffer) {
            Ok(0) => return None,
            Ok(n) => n,
            Err(e) => {
                self.failed = true;
                // The decoder below may pass the store's own error through; keep it.
                return Some(Err(match e.downcast::<Error>() {
                    Ok(error) => error,
                    Err(e) => Error::io(format!("reading {} at tree line {}", self.key, self.line), e),
                }));
            }
        };
        let result = if self.buffer[read - 1] != b'\n' {
            Err(self.corrupt("the last line is cut short"))
        } else {
            serde_json::from_slice::<Line>(&self.buffer[..read - 1])
                .map_err(|e| self.corrupt(e))
                .and_then(|line| TreeEntry::try_from(line).map_err(|e| self.corrupt(e)))
        };
        self.failed = result.is_err();
        Some(result)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::files::Change;

    fn file(path: &[u8]) -> TreeEntry {
        TreeEntry {
            path: path.to_vec(),
            kind: TreeKind::File,
            mode: 0o644,
            uid: 1000,
            gid: 1000,
            user: Some("www-data".into()),
            group: Some("www-data".into()),
            mtime: (1732545744, 123456789),
            size: 183211,
            chunks: vec![ChunkId([0xab; 32])],
            xattrs: vec![(b"user.k".to_vec(), b"hello".to_vec())],
            incomplete: None,
            object: None,
        }
    }

    #[test]
    fn a_file_line_is_exactly_the_spec_s() {
        let line = String::from_utf8(entry_line(&file(b"2026/11/a.jpg"))).unwrap();
        let expected = format!(
            "{{\"path\":\"2026/11/a.jpg\",\"type\":\"file\",\"mode\":420,\"uid\":1000,\"gid\":1000,\
             \"user\":\"www-data\",\"group\":\"www-data\",\"mtime\":[1732545744,123456789],\"size\":183211,\
             \"chunks\":[\"{}\"],\"xattrs\":{{\"user.k\":\"aGVsbG8=\"}}}}\n",
            "ab".repeat(32)
        );
        assert_eq!(line, expected);
    }

    #[test]
    fn other_kinds_and_non_utf8_names_have_their_fields() {
        let mut link = file(b"b\xff");
        link.kind = TreeKind::HardLink { link: b"a\xfe".to_vec() };
        link.user = None;
        link.xattrs.clear();
        let line = String::from_utf8(entry_line(&link)).unwrap();
        assert_eq!(
            line,
            "{\"path\":\"b\u{fffd}\",\"path_hex\":\"62ff\",\"type\":\"hardlink\",\"link\":\"a\u{fffd}\",\
             \"link_hex\":\"61fe\",\"mode\":420,\"uid\":1000,\"gid\":1000,\"group\":\"www-data\",\
             \"mtime\":[1732545744,123456789]}\n"
        );
        let mut symlink = file(b"latest");
        symlink.kind = TreeKind::Symlink { target: b"2026/11/a.jpg".to_vec() };
        let line = String::from_utf8(entry_line(&symlink)).unwrap();
        assert!(line.starts_with("{\"path\":\"latest\",\"type\":\"symlink\",\"target\":\"2026/11/a.jpg\",\"mode\""));
        assert!(!line.contains("size") && !line.contains("chunks"), "{line}");
        let mut root = file(b"");
        root.kind = TreeKind::Dir;
        assert!(String::from_utf8(entry_line(&root)).unwrap().starts_with("{\"path\":\"\",\"type\":\"dir\","));
    }

    #[test]
    fn entries_round_trip_through_writer_and_reader() {
        let mut root = file(b"");
        root.kind = TreeKind::Dir;
        root.size = 0;
        root.chunks.clear();
        let mut grown = file(b"a/b\xff");
        grown.incomplete = Some(Incomplete { change: Change::Grew, read: 183211, archived: 183211 });
        let mut symlink = file(b"a/c");
        symlink.kind = TreeKind::Symlink { target: b"../x\xfe".to_vec() };
        symlink.size = 0;
        symlink.chunks.clear();
        let mut hard = file(b"a-c");
        hard.kind = TreeKind::HardLink { link: b"a/b\xff".to_vec() };
        hard.size = 0;
        hard.chunks.clear();
        let entries = vec![root, file(b"a"), grown, symlink, hard];
        let mut writer = TreeWriter::new(Vec::new());
        for e in &entries {
            writer.write(e).unwrap();
        }
        assert_eq!(writer.counts(), TreeCounts { entries: 5, files: 2, bytes: 2 * 183211 });
        let bytes = writer.finish().unwrap();
        let read: Vec<TreeEntry> = TreeReader::new(&bytes[..], "tree").collect::<Result<_>>().unwrap();
        assert_eq!(read, entries);
    }

    #[test]
    fn the_writer_refuses_entries_out_of_walk_order() {
        let mut writer = TreeWriter::new(Vec::new());
        writer.write(&file(b"a-c")).unwrap();
        let err = writer.write(&file(b"a/b")).unwrap_err();
        assert!(err.to_string().contains("out of walk order"), "{err}");
        assert!(writer.write(&file(b"a-c")).is_err(), "a path twice");
    }

    #[test]
    fn walk_order_puts_a_directory_s_contents_before_its_later_siblings() {
        let mut paths: Vec<&[u8]> = vec![b"a-c", b"a/b", b"a", b"", b"a/b/c", b"b", b"a0"];
        paths.sort_by(|a, b| walk_order(a, b));
        assert_eq!(paths, vec![&b""[..], b"a", b"a/b", b"a/b/c", b"a-c", b"a0", b"b"]);
    }

    #[test]
    fn bad_lines_are_corruption_naming_the_line() {
        let good = entry_line(&file(b"a"));
        let cases: Vec<(Vec<u8>, &str)> = vec![
            ([good.clone(), b"{\"path\":\"b\"}\n".to_vec()].concat(), "line 2"),
            ([good.clone(), good[..20].to_vec()].concat(), "cut short"),
            (String::from_utf8(good.clone()).unwrap().replace("\"ab", "\"AB").into_bytes(), "64 lowercase hex"),
            (String::from_utf8(good.clone()).unwrap().replace(",\"size\":183211", "").into_bytes(), "without size"),
        ];
        for (bytes, expected) in cases {
            let err =
                TreeReader::new(&bytes[..], "objects/s/uploads/tree.json.age").collect::<Result<Vec<_>>>().unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, Error::ObjectCorrupt { .. }), "{text}");
            assert!(text.contains(expected) && text.contains("tree.json.age"), "{text}");
        }
    }
}
