//! The path filter of a chunked restore (`dr restore --only uploads --path 2026/11`): one directory with
//! everything below it, or one file, plus the directories above it (with their metadata from the snapshot, so
//! the restored part sits in the tree it came from).
//!
//! Hard links: the data of a file with several links is stored under its first path in walk order, and the
//! later paths are `hardlink` entries pointing to it. When the filter keeps a later path but not the first, the
//! data must still come back: the first KEPT path of that inode becomes a file with the first path's chunks,
//! and further kept paths of it link to that one. Knowing which first paths matter needs a look at the whole
//! tree before the restore stream: [`Selection::new`] makes that first pass (its memory grows with such links
//! only), [`Selection::select`] then rewrites the entries of the second pass.

use std::collections::{HashMap, HashSet};

use super::tree::{TreeEntry, TreeKind};
use crate::error::Result;

/// `filter` without leading/trailing slashes and `.` components: `/2026/11/` and `./2026/11` mean `2026/11`.
pub fn normalize_filter(filter: &[u8]) -> Vec<u8> {
    filter.split(|b| *b == b'/').filter(|part| !part.is_empty() && *part != b".").collect::<Vec<_>>().join(&b'/')
}

/// Whether a restore filtered to `filter` (normalized, see [`normalize_filter`]; empty = everything) restores
/// `path`: the path itself, everything below it, and its parent directories up to the root.
pub fn path_selected(filter: &[u8], path: &[u8]) -> bool {
    is_within(filter, path) || is_within(path, filter)
}

/// Whether `path` is `dir` or below it (every path is within the root, the empty path).
fn is_within(dir: &[u8], path: &[u8]) -> bool {
    dir.is_empty() || path == dir || (path.starts_with(dir) && path.get(dir.len()) == Some(&b'/'))
}

/// The entries of one filtered restore; see the module doc.
#[derive(Debug, Default)]
pub struct Selection {
    filter: Vec<u8>,
    /// First paths (outside the filter) of inodes that have a kept hard link.
    needed_sources: HashSet<Vec<u8>>,
    /// Such a first path's file entry, seen in the second pass, until its first kept link takes its data.
    pending: HashMap<Vec<u8>, TreeEntry>,
    /// First path -> the kept path that took its data.
    moved: HashMap<Vec<u8>, Vec<u8>>,
    matched: u64,
}

impl Selection {
    /// The first pass over the whole tree (`filter` as typed; empty restores everything and needs no pass:
    /// an empty iterator will do).
    pub fn new(filter: &[u8], tree: impl Iterator<Item = Result<TreeEntry>>) -> Result<Selection> {
        let filter = normalize_filter(filter);
        let mut needed_sources = HashSet::new();
        if !filter.is_empty() {
            for entry in tree {
                let entry = entry?;
                if let TreeKind::HardLink { link } = &entry.kind
                    && is_within(&filter, &entry.path)
                    && !is_within(&filter, link)
                {
                    needed_sources.insert(link.clone());
                }
            }
        }
        Ok(Selection { filter, needed_sources, ..Selection::default() })
    }

    /// The entry to restore for `entry` (in tree order), or `None` when the filter leaves it out.
    pub fn select(&mut self, entry: TreeEntry) -> Option<TreeEntry> {
        if !path_selected(&self.filter, &entry.path) {
            if entry.kind == TreeKind::File && self.needed_sources.remove(&entry.path) {
                self.pending.insert(entry.path.clone(), entry);
            }
            return None;
        }
        if is_within(&self.filter, &entry.path) {
            self.matched += 1;
        }
        let TreeKind::HardLink { link } = &entry.kind else {
            return Some(entry);
        };
        if let Some(kept) = self.moved.get(link) {
            return Some(TreeEntry { kind: TreeKind::HardLink { link: kept.clone() }, ..entry });
        }
        match self.pending.remove(link) {
            Some(source) => {
                self.moved.insert(link.clone(), entry.path.clone());
                // The inode's metadata is the same on every path; the data is the first path's.
                Some(TreeEntry {
                    kind: TreeKind::File,
                    size: source.size,
                    chunks: source.chunks,
                    incomplete: source.incomplete,
                    ..entry
                })
            }
            None => Some(entry),
        }
    }

    /// How many entries at or below the filter were selected so far: zero after the whole tree means the
    /// snapshot has no such path, which the restore should say rather than restore nothing.
    pub fn matched(&self) -> u64 {
        self.matched
    }

    pub fn filter(&self) -> &[u8] {
        &self.filter
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_directory_and_what_is_below_it_and_its_parents_are_selected() {
        let filter = normalize_filter(b"/2026/11/");
        assert_eq!(filter, b"2026/11");
        assert_eq!(normalize_filter(b"./a//b"), b"a/b");
        for yes in [&b""[..], b"2026", b"2026/11", b"2026/11/a.jpg", b"2026/11/x/y"] {
            assert!(path_selected(&filter, yes), "{}", String::from_utf8_lossy(yes));
        }
        for no in [&b"2026/1"[..], b"2026/110", b"2026/10/a.jpg", b"2027", b"2026/11.jpg"] {
            assert!(!path_selected(&filter, no), "{}", String::from_utf8_lossy(no));
        }
        assert!(path_selected(b"", b"anything/at/all"));
        assert!(path_selected(b"a.jpg", b"a.jpg") && !path_selected(b"a.jpg", b"a.jpg2"));
    }

    fn entry(path: &str, kind: TreeKind, chunk: u8) -> TreeEntry {
        TreeEntry {
            path: path.as_bytes().to_vec(),
            size: if kind == TreeKind::File { 10 } else { 0 },
            chunks: if kind == TreeKind::File { vec![crate::chunks::ChunkId([chunk; 32])] } else { vec![] },
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            user: None,
            group: None,
            mtime: (0, 0),
            xattrs: vec![],
            incomplete: None,
            object: None,
        }
    }

    fn link(path: &str, to: &str) -> TreeEntry {
        entry(path, TreeKind::HardLink { link: to.as_bytes().to_vec() }, 0)
    }

    #[test]
    fn a_hard_link_whose_first_path_is_left_out_gets_the_data() {
        let tree = vec![
            entry("", TreeKind::Dir, 0),
            entry("a", TreeKind::Dir, 0),
            entry("a/first", TreeKind::File, 7),
            entry("a/other", TreeKind::File, 8),
            entry("b", TreeKind::Dir, 0),
            link("b/second", "a/first"),
            link("b/third", "a/first"),
            entry("b/x", TreeKind::File, 9),
            link("b/y", "b/x"),
        ];
        let mut selection = Selection::new(b"b", tree.clone().into_iter().map(Ok)).unwrap();
        let kept: Vec<TreeEntry> = tree.into_iter().filter_map(|e| selection.select(e)).collect();
        let paths: Vec<&str> = kept.iter().map(|e| std::str::from_utf8(&e.path).unwrap()).collect();
        assert_eq!(paths, vec!["", "b", "b/second", "b/third", "b/x", "b/y"]);
        assert_eq!(kept[2].kind, TreeKind::File);
        assert_eq!((kept[2].size, kept[2].chunks.clone()), (10, vec![crate::chunks::ChunkId([7; 32])]));
        assert_eq!(kept[3].kind, TreeKind::HardLink { link: b"b/second".to_vec() });
        assert_eq!(kept[5].kind, TreeKind::HardLink { link: b"b/x".to_vec() }, "a link inside stays");
        assert_eq!(selection.matched(), 5);
    }

    #[test]
    fn no_filter_keeps_everything_as_it_is() {
        let tree = vec![entry("", TreeKind::Dir, 0), entry("f", TreeKind::File, 1), link("g", "f")];
        let mut selection = Selection::new(b"", std::iter::empty()).unwrap();
        let kept: Vec<TreeEntry> = tree.clone().into_iter().filter_map(|e| selection.select(e)).collect();
        assert_eq!(kept, tree);
    }
}
