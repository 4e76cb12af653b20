//! The metadata walk of a chunked backup: every kept entry of a source as a [`TreeEntry`] without chunks, in
//! walk order, the source root first.
//!
//! Only metadata is read here (lstat, readlink, xattrs): whether a file's contents must be read at all is the
//! cache's decision, made from the [`FileStat`] that comes with each regular file.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::unistd::{Gid, Group, Uid, User};

use super::excludes::Excludes;
use super::tree::{TreeEntry, TreeKind};
use crate::error::Result;

/// What decides whether a regular file changed since it was last read (the cache's key), and the identity of
/// its inode (hard links).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: (i64, u32),
    pub ctime: (i64, u32),
    pub nlink: u64,
}

impl FileStat {
    pub fn of(meta: &fs::Metadata) -> FileStat {
        FileStat {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime: (meta.mtime(), nanos(meta.mtime_nsec())),
            ctime: (meta.ctime(), nanos(meta.ctime_nsec())),
            nlink: meta.nlink(),
        }
    }
}

/// The kernel keeps nanoseconds in 0..1e9; anything else would be a broken filesystem, clamped rather than
/// trusted.
fn nanos(nsec: i64) -> u32 {
    nsec.clamp(0, 999_999_999) as u32
}

/// One step of the walk.
// Nearly every item is an entry: boxing it would add an allocation per entry to save nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalkItem {
    /// An entry to record; regular files (not their further hard links) come with their [`FileStat`].
    Entry(TreeEntry, Option<FileStat>),
    /// Left out, as `path: why` (the manifest lists these, as for tar sources).
    Skipped(String),
}

/// The walk; see the module doc. Hard links are found by (dev, ino) among files with more than one link, so
/// its memory grows with linked files only; user and group names are looked up once per id.
pub struct MetadataWalk<'a> {
    source_name: String,
    root: &'a Path,
    entries: Box<dyn Iterator<Item = walkdir::Result<walkdir::DirEntry>> + 'a>,
    root_done: bool,
    /// An item to give before walking on (a note about the entry just given).
    pending: Option<WalkItem>,
    first_links: HashMap<(u64, u64), Vec<u8>>,
    users: HashMap<u32, Option<String>>,
    groups: HashMap<u32, Option<String>>,
}

impl std::fmt::Debug for MetadataWalk<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataWalk").field("source_name", &self.source_name).field("root", &self.root).finish()
    }
}

const VANISHED: &str = "vanished during the backup";

impl<'a> MetadataWalk<'a> {
    pub fn new(source_name: &str, root: &'a Path, excludes: &'a Excludes) -> MetadataWalk<'a> {
        MetadataWalk {
            source_name: source_name.to_string(),
            root,
            entries: Box::new(excludes.walk(root)),
            root_done: false,
            pending: None,
            first_links: HashMap::new(),
            users: HashMap::new(),
            groups: HashMap::new(),
        }
    }

    /// The root itself: followed if it is a symlink, as the walk below follows it.
    fn root_entry(&mut self) -> Result<WalkItem> {
        let meta = fs::metadata(self.root).map_err(|e| self.error(self.root, e))?;
        let (xattrs, left_out) = self.xattrs(self.root)?;
        self.note_left_out(Path::new("."), &left_out);
        Ok(WalkItem::Entry(self.entry(Vec::new(), TreeKind::Dir, &meta, xattrs), None))
    }

    fn error(&self, path: &Path, e: io::Error) -> crate::Error {
        super::backup_error(&self.source_name, format!("{}: {e}", path.display()), e)
    }

    fn entry(&mut self, path: Vec<u8>, kind: TreeKind, meta: &fs::Metadata, xattrs: Xattrs) -> TreeEntry {
        let user = self.users.entry(meta.uid()).or_insert_with(|| user_name(meta.uid())).clone();
        let group = self.groups.entry(meta.gid()).or_insert_with(|| group_name(meta.gid())).clone();
        TreeEntry {
            size: if kind == TreeKind::File { meta.len() } else { 0 },
            path,
            kind,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            user,
            group,
            mtime: (meta.mtime(), nanos(meta.mtime_nsec())),
            chunks: Vec::new(),
            xattrs,
            incomplete: None,
            object: None,
        }
    }

    /// The attributes of `path` (never following a symlink) and the names left out because they are not
    /// UTF-8 (the tree keeps names as JSON keys). A filesystem without xattrs has none.
    fn xattrs(&self, path: &Path) -> Result<(Xattrs, Vec<String>)> {
        read_xattrs(path).map_err(|e| self.error(path, e))
    }

    /// Attributes left out are listed with the skipped entries, after the entry itself (which is kept).
    fn note_left_out(&mut self, relative: &Path, left_out: &[String]) {
        if !left_out.is_empty() {
            let names = left_out.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ");
            let why = format!("extended attribute {names} not kept: its name is not UTF-8");
            self.pending = Some(WalkItem::Skipped(format!("{}: {why}", relative.display())));
        }
    }

    /// The item for one entry below the root (skipped when it vanished or is a special file).
    fn item(&mut self, entry: &walkdir::DirEntry) -> Result<WalkItem> {
        let path = entry.path();
        let relative = path.strip_prefix(self.root).unwrap_or(path);
        let skipped = |why: &str| Ok(WalkItem::Skipped(format!("{}: {why}", relative.display())));
        let meta = match fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return skipped(VANISHED),
            Err(e) => return Err(self.error(path, e)),
        };
        let file_type = meta.file_type();
        let mut stat = None;
        let mut first_of_links = None;
        let kind = if file_type.is_dir() {
            TreeKind::Dir
        } else if file_type.is_symlink() {
            match fs::read_link(path) {
                Ok(target) => TreeKind::Symlink { target: target.as_os_str().as_bytes().to_vec() },
                Err(e) if e.kind() == io::ErrorKind::NotFound => return skipped(VANISHED),
                Err(e) => return Err(self.error(path, e)),
            }
        } else if file_type.is_file() {
            let file_stat = FileStat::of(&meta);
            let first = (file_stat.nlink > 1).then(|| self.first_links.get(&(file_stat.dev, file_stat.ino))).flatten();
            match first {
                Some(first) => TreeKind::HardLink { link: first.clone() },
                None => {
                    if file_stat.nlink > 1 {
                        first_of_links = Some((file_stat.dev, file_stat.ino));
                    }
                    stat = Some(file_stat);
                    TreeKind::File
                }
            }
        } else {
            return skipped("special file (socket, FIFO or device) not archived");
        };
        let (xattrs, left_out) = match read_xattrs(path) {
            Ok(found) => found,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return skipped(VANISHED),
            Err(e) => return Err(self.error(path, e)),
        };
        self.note_left_out(relative, &left_out);
        // Only now that the entry is given: later paths must not link to one that was skipped.
        if let Some(inode) = first_of_links {
            self.first_links.insert(inode, relative.as_os_str().as_bytes().to_vec());
        }
        Ok(WalkItem::Entry(self.entry(relative.as_os_str().as_bytes().to_vec(), kind, &meta, xattrs), stat))
    }
}

impl Iterator for MetadataWalk<'_> {
    type Item = Result<WalkItem>;

    fn next(&mut self) -> Option<Result<WalkItem>> {
        if let Some(item) = self.pending.take() {
            return Some(Ok(item));
        }
        if !self.root_done {
            self.root_done = true;
            return Some(self.root_entry());
        }
        let entry = match self.entries.next()? {
            Ok(entry) => entry,
            Err(e) if e.io_error().is_some_and(|io| io.kind() == io::ErrorKind::NotFound) => {
                let path = e.path().map_or_else(|| "?".to_string(), |p| p.display().to_string());
                return Some(Ok(WalkItem::Skipped(format!("{path}: {VANISHED}"))));
            }
            Err(e) => return Some(Err(super::backup_error(&self.source_name, e.to_string(), e))),
        };
        Some(self.item(&entry))
    }
}

type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// `path`'s extended attributes, sorted by name, without following a symlink; also the names left out (not
/// UTF-8). `ENOTSUP` (a filesystem without them) is none; an attribute removed meanwhile is skipped.
pub(crate) fn read_xattrs(path: &Path) -> io::Result<(Xattrs, Vec<String>)> {
    let names = match xattr::list(path) {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOTSUP) => return Ok((Vec::new(), Vec::new())),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    let mut left_out = Vec::new();
    for name in names {
        if name.to_str().is_none() {
            left_out.push(name.to_string_lossy().into_owned());
            continue;
        }
        if let Some(value) = xattr::get(path, &name)? {
            found.push((name.as_bytes().to_vec(), value));
        }
    }
    found.sort();
    Ok((found, left_out))
}

fn user_name(uid: u32) -> Option<String> {
    User::from_uid(Uid::from_raw(uid)).ok().flatten().map(|u| u.name)
}

fn group_name(gid: u32) -> Option<String> {
    Group::from_gid(Gid::from_raw(gid)).ok().flatten().map(|g| g.name)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::symlink;

    fn walk(root: &Path, excludes: &[&str]) -> Vec<WalkItem> {
        let excludes = Excludes::new(&excludes.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        MetadataWalk::new("uploads", root, &excludes).collect::<Result<Vec<_>>>().unwrap()
    }

    fn entries(items: &[WalkItem]) -> Vec<(&[u8], &TreeKind, Option<&FileStat>)> {
        items
            .iter()
            .filter_map(|i| match i {
                WalkItem::Entry(e, stat) => Some((&e.path[..], &e.kind, stat.as_ref())),
                WalkItem::Skipped(_) => None,
            })
            .collect()
    }

    #[test]
    fn the_root_comes_first_then_the_tree_in_walk_order_with_excludes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("a/b/f"), b"12345").unwrap();
        fs::write(root.join("a-c"), b"").unwrap();
        fs::write(root.join("x.tmp"), b"").unwrap();
        symlink("a/b/f", root.join("link")).unwrap();
        nix::unistd::mkfifo(&root.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let items = walk(root, &["*.tmp"]);
        let found = entries(&items);
        let paths: Vec<&[u8]> = found.iter().map(|e| e.0).collect();
        assert_eq!(paths, vec![&b""[..], b"a", b"a/b", b"a/b/f", b"a-c", b"link"]);
        assert_eq!(found[0].1, &TreeKind::Dir);
        assert_eq!(found[3].2.unwrap().size, 5);
        assert_eq!(found[5].1, &TreeKind::Symlink { target: b"a/b/f".to_vec() });
        assert!(found[5].2.is_none() && found[1].2.is_none(), "only regular files have a FileStat");
        let skipped: Vec<&WalkItem> = items.iter().filter(|i| matches!(i, WalkItem::Skipped(_))).collect();
        assert_eq!(
            skipped,
            vec![&WalkItem::Skipped("fifo: special file (socket, FIFO or device) not archived".into())]
        );
    }

    #[test]
    fn the_second_path_of_a_linked_file_is_a_hard_link_to_the_first() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("b"), b"data").unwrap();
        fs::hard_link(dir.path().join("b"), dir.path().join("a")).unwrap();
        fs::hard_link(dir.path().join("b"), dir.path().join("c")).unwrap();
        let items = walk(dir.path(), &[]);
        let found = entries(&items);
        assert_eq!(found[1].1, &TreeKind::File);
        assert_eq!(found[1].2.unwrap().nlink, 3);
        assert_eq!(found[2].1, &TreeKind::HardLink { link: b"a".to_vec() });
        assert_eq!(found[3].1, &TreeKind::HardLink { link: b"a".to_vec() });
        assert!(found[2].2.is_none(), "a hard link has no data of its own to read");
    }

    #[test]
    fn metadata_is_captured_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"x").unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o4751)).unwrap();
        filetime::set_file_mtime(&path, filetime::FileTime::from_unix_time(1_700_000_000, 123_456_789)).unwrap();
        let xattrs_supported = xattr::set(&path, "user.origin", b"camera").is_ok();
        let items = walk(dir.path(), &[]);
        let WalkItem::Entry(entry, _) = &items[1] else { panic!("{items:?}") };
        assert_eq!(entry.mode, 0o4751);
        assert_eq!(entry.mtime, (1_700_000_000, 123_456_789));
        let me = fs::metadata(&path).unwrap();
        assert_eq!((entry.uid, entry.gid), (me.uid(), me.gid()));
        assert_eq!(entry.user, user_name(me.uid()));
        if xattrs_supported {
            assert_eq!(entry.xattrs, vec![(b"user.origin".to_vec(), b"camera".to_vec())]);
            xattr::set(&path, std::ffi::OsStr::from_bytes(b"user.\xff"), b"v").unwrap();
            let items = walk(dir.path(), &[]);
            assert!(matches!(&items[1], WalkItem::Entry(e, _) if e.xattrs.len() == 1), "{items:?}");
            let note = "f: extended attribute \"user.\u{fffd}\" not kept: its name is not UTF-8";
            assert_eq!(items[2], WalkItem::Skipped(note.to_string()));
        }
    }
}
