//! Writing a chunked source's tree into a target directory, safely (the rules of `extract.rs` hold).
//!
//! A chunked restore does not get a stream in order: entries are created first (walk order), then file data
//! arrives chunk by chunk as packs are fetched, in any order, written at its offset; then the metadata is
//! applied, directories last and deepest first. So that this cannot be turned against the host by a bad tree:
//! - every path is relative without `..`, and every directory on the way to it is a real directory made by this
//!   restore (never a symlink): nothing is written through a link;
//! - entries are only ever created, never replaced: a path twice in the tree is refused, so a directory checked
//!   once stays a directory;
//! - symlinks pointing outside the target are refused unless `external_symlinks`, checked when made and again
//!   once the tree is complete (a later link can change where an earlier one leads);
//! - a hard link may only point to a regular file this restore made;
//! - everything lands in the staging directory of an [`Extraction`], and only a commit renames it into place.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::apply_metadata::MetadataApplier;
use super::extract::{ExtractSummary, Extraction, is_symlink, parent_of, resolves_inside, safe_relative};
use super::tree::{TreeEntry, TreeKind};
use crate::error::{Error, Result};

/// A file created by [`TreeExtraction::create`], to write its data into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileSlot(u32);

/// A file of the restore. A file of one chunk (every small file) is created when its chunk arrives, with one
/// open for both: a restore of many small files spends most of its time creating them (measured: 200,000
/// files, half the restore was the second open). Any other file is created up front at its final size, so that
/// its chunks can land in any order.
#[derive(Debug)]
struct RestoredFile {
    /// Where its relative path starts in [`RestoredFiles::paths`]; it ends where the next one starts.
    path_start: u64,
    size: u64,
    pending: AtomicBool,
}

/// Every file of the restore, by slot, held until the data is written: 24 bytes a file plus its path, in one
/// buffer (a `PathBuf` a file had cost ~90 bytes, 18 MB at 200,000 files).
#[derive(Debug, Default)]
struct RestoredFiles {
    paths: Vec<u8>,
    files: Vec<RestoredFile>,
}

impl RestoredFiles {
    fn push(&mut self, relative: &Path, size: u64, pending: bool) -> Option<FileSlot> {
        let slot = FileSlot(u32::try_from(self.files.len()).ok()?);
        self.files.push(RestoredFile { path_start: self.paths.len() as u64, size, pending: pending.into() });
        self.paths.extend_from_slice(relative.as_os_str().as_bytes());
        Some(slot)
    }

    /// The file in `slot`: its relative path, size, and whether it is still to be created.
    fn get(&self, slot: FileSlot) -> Option<(&Path, u64, &AtomicBool)> {
        let i = slot.0 as usize;
        let file = self.files.get(i)?;
        let end = self.files.get(i + 1).map_or(self.paths.len() as u64, |next| next.path_start);
        let path = self.paths.get(file.path_start as usize..end as usize)?;
        Some((Path::new(std::ffi::OsStr::from_bytes(path)), file.size, &file.pending))
    }

    fn slots(&self) -> impl DoubleEndedIterator<Item = FileSlot> + use<> {
        (0..self.files.len() as u32).map(FileSlot)
    }
}

/// One restore of a chunked source; see the module doc. Dropped without a commit, it leaves the target as it
/// was.
#[derive(Debug)]
pub struct TreeExtraction {
    extraction: Extraction,
    source_name: String,
    target: PathBuf,
    staging: PathBuf,
    external_symlinks: bool,
    /// Each file's path (relative), size, and whether it is still to be created, by slot.
    files: RestoredFiles,
    /// The last directory (relative) checked to be a real directory, reached without links: entries come in
    /// walk order, so most share it.
    checked_dir: Option<PathBuf>,
    /// The source root's own metadata, applied to the target at the commit.
    root: Option<TreeEntry>,
    /// Directories right below the root: their metadata is applied after the commit's renames, because a user
    /// who is not root cannot move a directory it made read-only into another one (`..` changes).
    top_directories: Vec<TreeEntry>,
    metadata: MetadataApplier,
    metadata_applied: bool,
    summary: ExtractSummary,
}

impl TreeExtraction {
    /// Creates the target if needed and a staging directory inside it (see [`Extraction::prepare`]).
    pub fn prepare(source_name: &str, target: &Path, external_symlinks: bool) -> Result<TreeExtraction> {
        let extraction = Extraction::prepare(source_name, target, external_symlinks)?;
        let staging = extraction.staging_dir().to_path_buf();
        Ok(TreeExtraction {
            extraction,
            source_name: source_name.to_string(),
            target: target.to_path_buf(),
            staging,
            external_symlinks,
            files: RestoredFiles::default(),
            checked_dir: None,
            root: None,
            top_directories: Vec::new(),
            metadata: MetadataApplier::new(),
            metadata_applied: false,
            summary: ExtractSummary::default(),
        })
    }

    pub fn staging_dir(&self) -> &Path {
        &self.staging
    }

    /// What was created so far.
    pub fn summary(&self) -> &ExtractSummary {
        &self.summary
    }

    fn unsafe_entry(&self, path: &Path, reason: &str) -> Error {
        Error::UnsafeArchiveEntry {
            source_name: self.source_name.clone(),
            path: path.display().to_string(),
            reason: reason.to_string(),
        }
    }

    fn io_error(&self, what: &Path, e: io::Error) -> Error {
        super::restore_error(&self.source_name, format!("{}: {e}", what.display()), e)
    }

    /// The entry's path, checked to be relative, without `..`, below real directories of this restore.
    fn checked_path(&mut self, entry: &TreeEntry) -> Result<PathBuf> {
        let raw = entry.relative_path();
        let relative = safe_relative(raw).map_err(|reason| self.unsafe_entry(raw, reason))?;
        self.check_directories(parent_of(&relative), raw)?;
        Ok(relative)
    }

    /// Every directory from the staging root down to `dir` is a real directory (not a link, not missing).
    fn check_directories(&mut self, dir: &Path, entry: &Path) -> Result<()> {
        if self.checked_dir.as_deref() == Some(dir) {
            return Ok(());
        }
        let mut position = self.staging.clone();
        for component in dir.components() {
            position.push(component);
            match fs::symlink_metadata(&position) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(self.unsafe_entry(entry, "it would be written through a symlink"));
                }
                Ok(meta) if meta.is_dir() => {}
                _ => return Err(self.unsafe_entry(entry, "its directory is not in the tree before it")),
            }
        }
        self.checked_dir = Some(dir.to_path_buf());
        Ok(())
    }

    /// A creation that failed: an entry twice in the tree is refused as unsafe (it would replace one).
    fn create_failed(&self, raw: &Path, e: io::Error) -> Error {
        if e.kind() == io::ErrorKind::AlreadyExists {
            self.unsafe_entry(raw, "the path appears twice in the tree")
        } else {
            self.io_error(raw, e)
        }
    }

    /// Creates the entry (in tree order): a directory; a file of its final size, to be filled by
    /// [`write_at`](Self::write_at) (its slot is returned); a symlink; a hard link to a file created before.
    /// The root entry creates nothing: its metadata goes to the target at the commit.
    pub fn create(&mut self, entry: &TreeEntry) -> Result<Option<FileSlot>> {
        let raw = entry.relative_path();
        if entry.is_root() {
            if entry.kind != TreeKind::Dir || self.root.is_some() {
                return Err(self.unsafe_entry(Path::new("."), "the root is not one directory"));
            }
            self.root = Some(entry.clone());
            return Ok(None);
        }
        let relative = self.checked_path(entry)?;
        let path = self.staging.join(&relative);
        match &entry.kind {
            TreeKind::Dir => {
                // Private until its own mode is applied, last.
                fs::DirBuilder::new().mode(0o700).create(&path).map_err(|e| self.create_failed(raw, e))?;
                self.summary.directories += 1;
                Ok(None)
            }
            TreeKind::File => {
                let pending = entry.chunks.len() == 1;
                if !pending {
                    self.create_file(&relative, entry.size).map_err(|e| self.create_failed(raw, e))?;
                }
                let slot = self
                    .files
                    .push(&relative, entry.size, pending)
                    .ok_or_else(|| self.unsafe_entry(raw, "a tree of more than 4 billion files"))?;
                self.summary.files += 1;
                self.summary.bytes += entry.size;
                Ok(Some(slot))
            }
            TreeKind::Symlink { target } => {
                let target = Path::new(std::ffi::OsStr::from_bytes(target));
                if target.as_os_str().is_empty() {
                    return Err(self.unsafe_entry(raw, "symlink without a target"));
                }
                if !self.external_symlinks && !resolves_inside(&self.staging, parent_of(&relative), target) {
                    return Err(self.external_symlink(raw, target));
                }
                std::os::unix::fs::symlink(target, &path).map_err(|e| self.create_failed(raw, e))?;
                self.summary.symlinks += 1;
                Ok(None)
            }
            TreeKind::HardLink { link } => {
                let link_raw = Path::new(std::ffi::OsStr::from_bytes(link));
                let link_relative = safe_relative(link_raw).map_err(|reason| self.unsafe_entry(raw, reason))?;
                let checked = self.checked_dir.clone();
                self.check_directories(parent_of(&link_relative), raw)?;
                self.checked_dir = checked;
                let first = self.staging.join(&link_relative);
                // A linked file of one chunk is not created yet: it is now, at its size, for the link.
                let linked = self.files.slots().rev().find_map(|slot| {
                    self.files.get(slot).filter(|(relative, _, _)| *relative == link_relative.as_path())
                });
                if let Some((_, size, pending)) = linked
                    && pending.swap(false, Ordering::SeqCst)
                {
                    self.create_file(&link_relative, size).map_err(|e| self.create_failed(link_raw, e))?;
                }
                if !fs::symlink_metadata(&first).is_ok_and(|m| m.is_file()) {
                    return Err(self.unsafe_entry(
                        raw,
                        &format!("hard link to {}, which is not a file restored before it", link_raw.display()),
                    ));
                }
                fs::hard_link(&first, &path).map_err(|e| self.create_failed(raw, e))?;
                self.summary.files += 1;
                Ok(None)
            }
        }
    }

    /// Creates a file (never through a link, never over an entry), private until its metadata is applied.
    fn new_file(&self, relative: &Path) -> std::io::Result<fs::File> {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(self.staging.join(relative))
    }

    /// Creates a file at its final size: chunks can then land at their offsets in any order.
    fn create_file(&self, relative: &Path, size: u64) -> std::io::Result<()> {
        self.new_file(relative)?.set_len(size)
    }

    fn external_symlink(&self, path: &Path, target: &Path) -> Error {
        Error::ExternalSymlink {
            source_name: self.source_name.clone(),
            path: path.display().to_string(),
            target: target.display().to_string(),
        }
    }

    /// Writes `data` at `offset` of a created file. Any order, any thread; a write past the size the tree gave
    /// the file is refused (the tree and its chunks disagree).
    pub fn write_at(&self, slot: FileSlot, offset: u64, data: &[u8]) -> Result<()> {
        let Some((relative, size, pending)) = self.files.get(slot) else {
            return Err(self.unsafe_entry(Path::new("?"), "data for a file this restore did not create"));
        };
        if offset.checked_add(data.len() as u64).is_none_or(|end| end > size) {
            return Err(self.unsafe_entry(relative, &format!("its data runs past its size of {size} bytes")));
        }
        if pending.swap(false, Ordering::SeqCst) {
            if (offset, data.len() as u64) != (0, size) {
                return Err(self.unsafe_entry(relative, "its one chunk does not hold the whole file"));
            }
            let mut file = self.new_file(relative).map_err(|e| self.create_failed(relative, e))?;
            return std::io::Write::write_all(&mut file, data).map_err(|e| self.io_error(relative, e));
        }
        let file = OpenOptions::new()
            .write(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(self.staging.join(relative))
            .map_err(|e| self.io_error(relative, e))?;
        file.write_all_at(data, offset).map_err(|e| self.io_error(relative, e))
    }

    /// Once all data is written: checks every entry against what was created (and every symlink again, the
    /// tree being complete), then applies owners, xattrs, modes and times (see `apply_metadata.rs`), to
    /// directories last and deepest first, so that nothing done afterwards moves their times or is refused by
    /// a read-only mode. `entries` are the created ones, in the same order. Returns the warnings (each kind
    /// once).
    pub fn finish_metadata(&mut self, entries: impl Iterator<Item = TreeEntry>) -> Result<Vec<String>> {
        let never_written =
            self.files.slots().filter_map(|slot| self.files.get(slot)).find(|f| f.2.load(Ordering::SeqCst));
        if let Some((relative, _, _)) = never_written {
            return Err(self.unsafe_entry(relative, "its data never arrived"));
        }
        let mut directories: Vec<(PathBuf, TreeEntry)> = Vec::new();
        for entry in entries {
            if entry.is_root() {
                self.root = Some(entry);
                continue;
            }
            let raw = entry.relative_path().to_path_buf();
            let relative = self.checked_path(&entry)?;
            let path = self.staging.join(&relative);
            let meta = fs::symlink_metadata(&path).map_err(|e| self.io_error(&raw, e))?;
            let matches = match &entry.kind {
                TreeKind::Dir => meta.is_dir(),
                TreeKind::File | TreeKind::HardLink { .. } => meta.is_file(),
                TreeKind::Symlink { .. } => meta.file_type().is_symlink(),
            };
            if !matches {
                return Err(self.unsafe_entry(&raw, "it is not what the tree created there"));
            }
            if matches!(entry.kind, TreeKind::Symlink { .. }) && !self.external_symlinks {
                let target = fs::read_link(&path).map_err(|e| self.io_error(&raw, e))?;
                if !resolves_inside(&self.staging, parent_of(&relative), &target) {
                    return Err(self.unsafe_entry(
                        &raw,
                        &format!("symlink to {} leads outside the target through other links", target.display()),
                    ));
                }
            }
            match entry.kind {
                TreeKind::Dir => {
                    directories.push((relative, entry));
                    continue;
                }
                // The inode got its metadata through its first path (the same); a second time could be refused
                // (user xattrs on a file made read-only, as non-root).
                TreeKind::HardLink { .. } => continue,
                TreeKind::File | TreeKind::Symlink { .. } => {}
            }
            self.metadata.apply(&path, &entry).map_err(|e| self.io_error(&raw, e))?;
        }
        directories.sort_by_key(|(relative, _)| std::cmp::Reverse(relative.components().count()));
        self.top_directories.clear();
        for (relative, entry) in directories {
            if relative.components().count() == 1 {
                self.top_directories.push(entry);
                continue;
            }
            let path = self.staging.join(&relative);
            if is_symlink(&path) {
                return Err(self.unsafe_entry(&relative, "a directory was replaced by a symlink"));
            }
            self.metadata.apply(&path, &entry).map_err(|e| self.io_error(&relative, e))?;
        }
        self.metadata_applied = true;
        Ok(self.metadata.take_warnings())
    }

    /// Moves the staged tree into the target (with `replace`, whatever the target held is deleted first; see
    /// [`Extraction::commit`]), then gives the directories right below the root, and the target directory
    /// itself, their metadata: the renames would move the target's times, and a read-only directory could not
    /// be moved by a user who is not root. Returns warnings, as [`finish_metadata`](Self::finish_metadata).
    pub fn commit(mut self, replace: bool) -> Result<Vec<String>> {
        if !self.metadata_applied {
            let e = io::Error::other("the restore's metadata was not applied before its commit");
            return Err(self.io_error(&self.target, e));
        }
        let root = self.root.take();
        let top_directories = std::mem::take(&mut self.top_directories);
        let target = self.target.clone();
        self.extraction.commit(replace)?;
        let source_name = self.source_name.clone();
        let fail =
            |path: &Path, e: io::Error| super::restore_error(&source_name, format!("{}: {e}", path.display()), e);
        for entry in &top_directories {
            let path = target.join(entry.relative_path());
            if is_symlink(&path) {
                let e = io::Error::other("replaced by a symlink during the restore");
                return Err(fail(&path, e));
            }
            self.metadata.apply(&path, entry).map_err(|e| fail(&path, e))?;
        }
        if let Some(root) = root {
            self.metadata.apply(&target, &root).map_err(|e| fail(&target, e))?;
        }
        Ok(self.metadata.take_warnings())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn entry(path: &str, kind: TreeKind) -> TreeEntry {
        TreeEntry {
            path: path.as_bytes().to_vec(),
            kind,
            mode: 0o755,
            uid: 0,
            gid: 0,
            user: None,
            group: None,
            mtime: (1_700_000_000, 5),
            size: 0,
            chunks: vec![],
            xattrs: vec![],
            incomplete: None,
            object: None,
        }
    }

    fn symlink(path: &str, target: &str) -> TreeEntry {
        entry(path, TreeKind::Symlink { target: target.as_bytes().to_vec() })
    }

    /// The error of creating `entries` in order into a fresh target (the last one is expected to fail).
    fn refused(entries: &[TreeEntry]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let mut extraction = TreeExtraction::prepare("uploads", &dir.path().join("t"), false).unwrap();
        for e in &entries[..entries.len() - 1] {
            extraction.create(e).unwrap();
        }
        extraction.create(entries.last().unwrap()).unwrap_err().to_string()
    }

    #[test]
    fn unsafe_trees_are_refused_naming_the_entry() {
        let dir = || entry("d", TreeKind::Dir);
        let file = |p: &str| entry(p, TreeKind::File);
        let link = |p: &str, to: &str| entry(p, TreeKind::HardLink { link: to.as_bytes().to_vec() });
        let cases: Vec<(Vec<TreeEntry>, &str)> = vec![
            (vec![file("../x")], "`..`"),
            (vec![file("/etc/x")], "absolute"),
            (vec![symlink("l", "/etc")], "pointing outside"),
            (vec![symlink("l", "."), file("l/x")], "through a symlink"),
            (vec![file("missing/x")], "not in the tree before it"),
            (vec![dir(), dir()], "twice"),
            (vec![file("f"), symlink("f", "x")], "twice"),
            (vec![symlink("l", "."), link("h", "l")], "not a file restored before it"),
            (vec![link("h", "../../etc/passwd")], "`..`"),
        ];
        for (entries, expected) in cases {
            let err = refused(&entries);
            assert!(err.contains(expected), "{expected:?} not in {err:?}");
        }
    }

    #[test]
    fn data_past_the_size_and_unfinished_commits_are_refused_and_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t");
        let mut extraction = TreeExtraction::prepare("uploads", &target, false).unwrap();
        let mut f = entry("f", TreeKind::File);
        f.size = 4;
        let slot = extraction.create(&f).unwrap().unwrap();
        extraction.write_at(slot, 2, b"cd").unwrap();
        extraction.write_at(slot, 0, b"ab").unwrap();
        assert!(extraction.write_at(slot, 3, b"xy").unwrap_err().to_string().contains("past its size"));
        assert_eq!(fs::read(extraction.staging_dir().join("f")).unwrap(), b"abcd");
        assert!(extraction.commit(false).unwrap_err().to_string().contains("not applied"));
        assert!(!target.exists(), "an uncommitted restore takes back the target it made");
    }

    /// Restores `entries` (no file data) into `target` and commits.
    fn restore(target: &Path, entries: &[TreeEntry], external_symlinks: bool, replace: bool) -> Result<Vec<String>> {
        let mut extraction = TreeExtraction::prepare("uploads", target, external_symlinks)?;
        for e in entries {
            extraction.create(e)?;
        }
        extraction.finish_metadata(entries.iter().cloned())?;
        extraction.commit(replace)
    }

    #[test]
    fn external_symlinks_are_restored_when_allowed_and_replace_empties_the_target_first() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("old"), b"old").unwrap();
        let entries = [entry("", TreeKind::Dir), symlink("etc", "/etc")];
        assert!(matches!(restore(&target, &entries, false, true), Err(Error::ExternalSymlink { .. })));
        assert!(target.join("old").exists(), "a refused restore changes nothing");
        restore(&target, &entries, true, true).unwrap();
        assert_eq!(fs::read_link(target.join("etc")).unwrap(), Path::new("/etc"));
        assert!(!target.join("old").exists(), "--force replaces what was there");
        let names: Vec<_> = fs::read_dir(&target).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("etc")], "no staging directory left");
    }

    #[test]
    fn a_link_made_harmless_then_redirected_by_a_later_link_is_caught_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut extraction = TreeExtraction::prepare("uploads", &dir.path().join("t"), false).unwrap();
        // When `e` is made, `x` does not exist: `x/../y` is `y`, inside. Then `x` becomes a link to the root
        // (through `d/up -> ..`), each link inside on its own, and `e` now leads to the root's parent.
        let entries = vec![
            entry("", TreeKind::Dir),
            entry("d", TreeKind::Dir),
            symlink("d/up", ".."),
            symlink("e", "x/../y"),
            symlink("x", "d/up"),
        ];
        for e in &entries {
            extraction.create(e).unwrap();
        }
        let err = extraction.finish_metadata(entries.into_iter()).unwrap_err().to_string();
        assert!(err.contains("\"e\"") && err.contains("leads outside the target through other links"), "{err}");
    }
}
