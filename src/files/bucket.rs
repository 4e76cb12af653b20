//! A bucket's listing as a tree: object keys below the source's prefix become paths, the `/`s in them become
//! directories, and everything comes out in walk order, as a directory's walk does.
//!
//! A bucket is not a file system, so some keys have no place in a tree. Each is left out and said (the
//! manifest lists it with the skipped entries, and the backup warns), never dropped silently:
//! - a key with an empty, `.` or `..` component (`a//b`, `../x`): no path can hold it;
//! - an object whose key is also the "directory" of other keys (`a` beside `a/b`): a path is a file or a
//!   directory, not both;
//! - a "folder" object (a key ending in `/`) that holds bytes.
//!
//! Directories take the newest object's time. The listing is held in memory while it is sorted (the bucket's
//! byte order puts `a-b` before `a/x`, the walk the other way round): about 150 bytes an object.

use std::path::Path;

use super::excludes::Excludes;
use super::object_info::ObjectInfo;
use super::tree::{TreeEntry, TreeKind, walk_order};
use super::walk::{FileStat, WalkItem};
use crate::store::s3::ListedObject;

/// The longest name a Linux file system holds (NAME_MAX), in bytes.
const NAME_MAX: usize = 255;

/// Modes of restored objects and directories: what a web server reads.
const FILE_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o755;

/// The entries of a bucket source in walk order: the root, then every kept object and the directories above
/// it. Objects come with a [`FileStat`] whose size and mtime are the listing's (the cache compares them and
/// the ETag); directories carry an `object` with an empty ETag (no object stands for them), folder objects
/// their own. Also returns what the backup should say now rather than a restore later: keys kept that a
/// directory cannot hold (a part longer than 255 bytes), which restore into a bucket only.
pub fn bucket_entries(mut listed: Vec<ListedObject>, excludes: &Excludes) -> (Vec<WalkItem>, Vec<String>) {
    let mut warnings = Vec::new();
    listed.sort_by(|a, b| walk_order(a.key.as_bytes(), b.key.as_bytes()));
    let newest = listed.iter().map(|o| o.modified).max().unwrap_or((0, 0));
    let mut items = vec![WalkItem::Entry(directory(Vec::new(), newest, None), None)];
    // The directories of the last entry written, outermost first.
    let mut open: Vec<Vec<u8>> = Vec::new();
    for (i, object) in listed.iter().enumerate() {
        let folder = object.key.ends_with('/');
        let path = object.key.trim_end_matches('/');
        if path.is_empty() || path.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
            items.push(WalkItem::Skipped(format!(
                "{}: the key has an empty, `.` or `..` part, which no path can hold",
                object.key
            )));
            continue;
        }
        if excluded(excludes, path) {
            continue;
        }
        if path.split('/').any(|part| part.len() > NAME_MAX) {
            warnings.push(format!(
                "{}: a part of the key is longer than {NAME_MAX} bytes; it restores into a bucket, but a restore \
                 into a directory (and a drill) cannot create it",
                object.key
            ));
        }
        let next_is_inside = listed.get(i + 1).is_some_and(|next| {
            next.key.len() > path.len() && next.key.starts_with(path) && next.key.as_bytes()[path.len()] == b'/'
        });
        if folder && object.size > 0 {
            items.push(WalkItem::Skipped(format!(
                "{}: a folder object that holds {} bytes (a path is a directory or a file)",
                object.key, object.size
            )));
            continue;
        }
        if !folder && next_is_inside {
            items.push(WalkItem::Skipped(format!(
                "{}: other keys use it as a directory ({}...), and a path is a directory or a file",
                object.key,
                listed[i + 1].key
            )));
            continue;
        }
        let bytes = path.as_bytes();
        let parents: Vec<&[u8]> =
            bytes.iter().enumerate().filter(|(_, b)| **b == b'/').map(|(at, _)| &bytes[..at]).collect();
        let kept = open.iter().zip(&parents).take_while(|(open, parent)| open.as_slice() == **parent).count();
        open.truncate(kept);
        for parent in &parents[kept..] {
            items.push(WalkItem::Entry(directory(parent.to_vec(), newest, None), None));
            open.push(parent.to_vec());
        }
        let info = ObjectInfo { etag: object.etag.clone(), ..ObjectInfo::default() };
        if folder {
            items.push(WalkItem::Entry(directory(bytes.to_vec(), object.modified, Some(info)), None));
            open.push(bytes.to_vec());
            continue;
        }
        let stat = FileStat { dev: 0, ino: 0, size: object.size, mtime: object.modified, ctime: (0, 0), nlink: 1 };
        let entry = TreeEntry {
            path: bytes.to_vec(),
            kind: TreeKind::File,
            mode: FILE_MODE,
            uid: 0,
            gid: 0,
            user: None,
            group: None,
            mtime: object.modified,
            size: object.size,
            chunks: Vec::new(),
            xattrs: Vec::new(),
            incomplete: None,
            object: Some(info),
        };
        items.push(WalkItem::Entry(entry, Some(stat)));
    }
    (items, warnings)
}

/// Whether the path or a directory above it is excluded (an excluded directory is left out whole).
fn excluded(excludes: &Excludes, path: &str) -> bool {
    let mut at = 0;
    loop {
        let end = path[at..].find('/').map_or(path.len(), |i| at + i);
        if excludes.is_excluded(Path::new(&path[..end])) {
            return true;
        }
        if end == path.len() {
            return false;
        }
        at = end + 1;
    }
}

fn directory(path: Vec<u8>, mtime: (i64, u32), folder: Option<ObjectInfo>) -> TreeEntry {
    TreeEntry {
        path,
        kind: TreeKind::Dir,
        mode: DIR_MODE,
        uid: 0,
        gid: 0,
        user: None,
        group: None,
        mtime,
        size: 0,
        chunks: Vec::new(),
        xattrs: Vec::new(),
        incomplete: None,
        object: Some(folder.unwrap_or_default()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn object(key: &str, size: u64) -> ListedObject {
        ListedObject { key: key.into(), size, etag: format!("\"{key}\""), modified: (1_700_000_000, 0) }
    }

    fn paths(items: &[WalkItem]) -> Vec<String> {
        items
            .iter()
            .map(|item| match item {
                WalkItem::Entry(entry, _) => {
                    let kind = if entry.kind == TreeKind::Dir { "/" } else { "" };
                    format!("{}{kind}", entry.display_path())
                }
                WalkItem::Skipped(why) => format!("skipped {}", why.split(':').next().unwrap()),
            })
            .collect()
    }

    #[test]
    fn keys_become_a_tree_in_walk_order_with_the_directories_they_imply() {
        let listed = vec![object("a-b", 1), object("a/x", 2), object("a/y/z", 3), object("b", 4), object("a/y/", 0)];
        let (items, warnings) = bucket_entries(listed, &Excludes::new(&[]).unwrap());
        assert_eq!(paths(&items), ["./", "a/", "a/x", "a/y/", "a/y/z", "a-b", "b"]);
        assert!(warnings.is_empty());
        let WalkItem::Entry(folder, None) = &items[3] else { panic!() };
        assert_eq!(folder.object.as_ref().unwrap().etag, "\"a/y/\"", "a folder object keeps its ETag");
        let WalkItem::Entry(implied, None) = &items[1] else { panic!() };
        assert_eq!(implied.object.as_ref().unwrap().etag, "", "an implied directory has no object");
        let WalkItem::Entry(file, Some(stat)) = &items[2] else { panic!() };
        assert_eq!((file.size, stat.size, file.object.as_ref().unwrap().etag.as_str()), (2, 2, "\"a/x\""));
    }

    #[test]
    fn keys_that_cannot_be_paths_are_skipped_and_said() {
        let listed = vec![object("a", 1), object("a/b", 2), object("c//d", 3), object("../e", 4), object("f/", 5)];
        let (items, _) = bucket_entries(listed, &Excludes::new(&[]).unwrap());
        assert_eq!(paths(&items), ["./", "skipped ../e", "skipped a", "a/", "a/b", "skipped c//d", "skipped f/"]);
        let long = format!("d/{}.jpg", "x".repeat(300));
        let (items, warnings) = bucket_entries(vec![object(&long, 1)], &Excludes::new(&[]).unwrap());
        assert_eq!(items.len(), 3, "kept, with its directory");
        assert!(warnings[0].starts_with(&format!("{long}: a part of the key is longer than 255 bytes")));
    }

    #[test]
    fn excludes_apply_to_keys_and_their_directories() {
        let listed = vec![object("cache/a/b.jpg", 1), object("x.tmp", 2), object("y.jpg", 3)];
        let (items, _) = bucket_entries(listed, &Excludes::new(&["*.tmp".into(), "cache".into()]).unwrap());
        assert_eq!(paths(&items), ["./", "y.jpg"]);
    }
}
