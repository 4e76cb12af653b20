//! Restoring a tar stream into a directory, safely.
//!
//! - Every entry is checked before anything is written: no absolute paths, no `..`, no symlink pointing
//!   outside the target, no device or FIFO entries. A bad entry fails the restore naming the entry.
//! - A symlink's target is resolved the way the kernel would, following the links already extracted, so a
//!   chain such as `a -> .` and `b -> a/..` cannot lead out either; once the whole archive is extracted, every
//!   link is resolved again, because a later entry can change where an earlier link leads. Nothing is ever
//!   written through a link (the tar crate refuses that too).
//! - Extraction goes into a hidden staging directory inside the target (`.dr-restore-*`, same filesystem, and
//!   it works when the target is a mount point such as a Docker volume). Only when the whole stream was read
//!   and checked are the staged entries renamed into place, so a corrupt or interrupted restore changes
//!   nothing in the target; a target directory created for the restore is removed again.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use filetime::FileTime;
use tar::EntryType;

use crate::error::{Error, Result};

/// Names of the staging directories extraction makes inside a target (`run_dir` lists them for sweeping).
pub(crate) const STAGING_PREFIX: &str = ".dr-restore-";
/// Symlinks followed while resolving one path before giving up (Linux's own limit).
const MAX_LINK_HOPS: usize = 40;

/// What a restore target directory looks like now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectoryState {
    Missing,
    Empty,
    /// How many entries it has.
    NotEmpty(usize),
}

/// Looks at a target directory (ignoring staging leftovers of an interrupted restore).
pub fn inspect_directory(path: &Path) -> io::Result<DirectoryState> {
    match fs::read_dir(path) {
        Ok(entries) => {
            let count = entries
                .filter_map(|e| e.ok())
                .filter(|e| !e.file_name().to_string_lossy().starts_with(STAGING_PREFIX))
                .count();
            Ok(if count == 0 { DirectoryState::Empty } else { DirectoryState::NotEmpty(count) })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(DirectoryState::Missing),
        Err(e) => Err(e),
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ExtractSummary {
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
    pub bytes: u64,
}

/// One restore of a files source into a target directory.
#[derive(Debug)]
pub struct Extraction {
    source_name: String,
    target: PathBuf,
    staging: Option<PathBuf>,
    /// The highest directory `prepare` created for the target (the target itself, or an ancestor).
    created: Option<PathBuf>,
    /// Whether symlinks may point outside the target (`external_symlinks` of the files source).
    external_symlinks: bool,
    /// The existing target's modification time: making and removing the staging directory changes it, and
    /// an extraction that is not committed leaves the target as it found it.
    target_mtime: Option<FileTime>,
}

impl Extraction {
    /// Creates the target if needed, and a fresh staging directory inside it. With `external_symlinks`,
    /// symlinks pointing outside the target are restored as they are (still never written through).
    pub fn prepare(source_name: &str, target: &Path, external_symlinks: bool) -> Result<Extraction> {
        let fail = |e: io::Error| super::restore_error(source_name, format!("{}: {e}", target.display()), e);
        let created = highest_missing(target);
        // From here on, dropping the extraction uncommitted takes back what it made.
        let mut extraction = Extraction {
            source_name: source_name.to_string(),
            target: target.to_path_buf(),
            staging: None,
            created,
            external_symlinks,
            target_mtime: fs::metadata(target).ok().map(|m| FileTime::from_last_modification_time(&m)),
        };
        fs::create_dir_all(target).map_err(fail)?;
        let staging = target.join(format!("{STAGING_PREFIX}{:016x}", rand::random::<u64>()));
        fs::create_dir(&staging).map_err(fail)?;
        extraction.staging = Some(staging);
        Ok(extraction)
    }

    fn staging(&self) -> &Path {
        self.staging.as_deref().unwrap_or(&self.target)
    }

    /// The hidden staging directory inside the target, where entries land until the commit.
    pub fn staging_dir(&self) -> &Path {
        self.staging()
    }

    fn unsafe_entry(&self, path: &Path, reason: &str) -> Error {
        Error::UnsafeArchiveEntry {
            source_name: self.source_name.clone(),
            path: path.display().to_string(),
            reason: reason.to_string(),
        }
    }

    fn external_symlink(&self, path: &Path, target: &Path) -> Error {
        Error::ExternalSymlink {
            source_name: self.source_name.clone(),
            path: path.display().to_string(),
            target: target.display().to_string(),
        }
    }

    fn io_error(&self, what: &str, e: io::Error) -> Error {
        // The tar crate wraps the real reason (a bad header field, a refused path) in a generic "failed to
        // unpack" error: quote the whole chain.
        let mut message = format!("{what}: {e}");
        let mut cause = std::error::Error::source(&e);
        while let Some(inner) = cause {
            message.push_str(&format!(": {inner}"));
            cause = inner.source();
        }
        super::restore_error(&self.source_name, message, e)
    }

    /// Extracts the whole stream into the staging directory.
    pub fn extract(&self, reader: &mut dyn Read) -> Result<ExtractSummary> {
        let staging = self.staging().to_path_buf();
        let mut archive = tar::Archive::new(reader);
        archive.set_preserve_permissions(true);
        archive.set_preserve_mtime(true);
        archive.set_preserve_ownerships(nix::unistd::Uid::effective().is_root());
        archive.set_unpack_xattrs(false);
        archive.set_overwrite(true);
        let mut summary = ExtractSummary::default();
        // Directory modes and times are applied last: adding files would change the times, and a read-only
        // directory would refuse its own contents.
        let mut directories: Vec<(PathBuf, u32, u64)> = Vec::new();
        // Every symlink, checked again once the tree is complete.
        let mut links: Vec<(PathBuf, PathBuf)> = Vec::new();
        let entries = archive.entries().map_err(|e| self.io_error("reading the archive", e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| self.io_error("reading the archive", e))?;
            let raw_path = entry.path().map_err(|e| self.io_error("reading an entry name", e))?.into_owned();
            let relative = safe_relative(&raw_path).map_err(|reason| self.unsafe_entry(&raw_path, reason))?;
            let header = entry.header();
            let mode = header.mode().unwrap_or(0o755);
            let mtime = header.mtime().unwrap_or(0);
            match header.entry_type() {
                EntryType::Directory => {
                    // create_dir_all and the chmod below follow symlinks: a directory entry at or under a link
                    // must not reach out of the target through it.
                    if !resolves_inside(&staging, Path::new(""), &relative) || is_symlink(&staging.join(&relative)) {
                        return Err(self.unsafe_entry(&raw_path, "directory entry at or under a symlink"));
                    }
                    let dir = staging.join(&relative);
                    fs::create_dir_all(&dir).map_err(|e| self.io_error(&relative.display().to_string(), e))?;
                    directories.push((relative, mode, mtime));
                    summary.directories += 1;
                    continue;
                }
                EntryType::Symlink => {
                    let target = entry
                        .link_name()
                        .map_err(|e| self.io_error("reading a link target", e))?
                        .ok_or_else(|| self.unsafe_entry(&raw_path, "symlink without a target"))?;
                    if !self.external_symlinks && !resolves_inside(&staging, parent_of(&relative), &target) {
                        return Err(self.external_symlink(&raw_path, &target));
                    }
                    links.push((raw_path.clone(), relative.clone()));
                    summary.symlinks += 1;
                }
                EntryType::Link => {
                    let target = entry
                        .link_name()
                        .map_err(|e| self.io_error("reading a link target", e))?
                        .ok_or_else(|| self.unsafe_entry(&raw_path, "hard link without a target"))?;
                    safe_relative(&target).map_err(|reason| self.unsafe_entry(&raw_path, reason))?;
                    // A hard link to a path that leads through a symlink to the outside would share, and later
                    // let a write reach, a file outside the target.
                    if !resolves_inside(&staging, Path::new(""), &target) {
                        return Err(self.unsafe_entry(&raw_path, "hard link through a symlink that leads outside"));
                    }
                    summary.files += 1;
                }
                EntryType::Regular | EntryType::Continuous => {
                    summary.files += 1;
                    summary.bytes += header.size().unwrap_or(0);
                }
                EntryType::XHeader | EntryType::XGlobalHeader | EntryType::GNULongName | EntryType::GNULongLink => {
                    continue;
                }
                other => {
                    return Err(self.unsafe_entry(&raw_path, &format!("{other:?} entries are never written by dr")));
                }
            }
            let hard_link = entry.link_name().ok().flatten().filter(|_| header.entry_type() == EntryType::Link);
            let hard_link = hard_link.map(|l| l.into_owned());
            let unpacked = entry.unpack_in(&staging).map_err(|e| {
                // The tar crate refuses to write through a link that leads outside; say that is what happened.
                let through_link = !resolves_inside(&staging, parent_of(&relative), Path::new(""))
                    || hard_link.as_deref().is_some_and(|l| !resolves_inside(&staging, Path::new(""), l));
                if through_link {
                    self.unsafe_entry(&raw_path, "it would be written through a symlink that leads outside the target")
                } else {
                    self.io_error(&relative.display().to_string(), e)
                }
            })?;
            if !unpacked {
                return Err(self.unsafe_entry(&raw_path, "it would be written outside the target"));
            }
        }
        for (raw_path, relative) in links.into_iter().filter(|_| !self.external_symlinks) {
            let Ok(target) = fs::read_link(staging.join(&relative)) else {
                continue; // replaced by a later entry
            };
            if !resolves_inside(&staging, parent_of(&relative), &target) {
                return Err(self.unsafe_entry(
                    &raw_path,
                    &format!("symlink to {} leads outside the target through other links", target.display()),
                ));
            }
        }
        directories.sort_by_key(|d| std::cmp::Reverse(d.0.components().count()));
        for (relative, mode, mtime) in directories {
            let dir = staging.join(&relative);
            if is_symlink(&dir) {
                return Err(self.unsafe_entry(&relative, "a directory was replaced by a symlink"));
            }
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&dir, fs::Permissions::from_mode(mode & 0o7777))
                .and_then(|()| filetime::set_file_mtime(&dir, FileTime::from_unix_time(mtime as i64, 0)))
                .map_err(|e| self.io_error(&relative.display().to_string(), e))?;
        }
        Ok(summary)
    }

    /// Moves the staged tree into the target. With `replace`, whatever the target held is deleted first.
    pub fn commit(mut self, replace: bool) -> Result<()> {
        let staging = self.staging.clone().unwrap_or_default();
        let staging_name = staging.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        let existing = fs::read_dir(&self.target).map_err(|e| self.io_error("reading the target", e))?;
        for entry in existing {
            let entry = entry.map_err(|e| self.io_error("reading the target", e))?;
            let name = entry.file_name();
            let stale_staging = name.to_string_lossy().starts_with(STAGING_PREFIX);
            if name == staging_name || !(replace || stale_staging) {
                continue;
            }
            let path = entry.path();
            let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            removed.map_err(|e| self.io_error(&format!("removing {}", path.display()), e))?;
        }
        let staged = fs::read_dir(&staging).map_err(|e| self.io_error("reading the staging directory", e))?;
        for entry in staged {
            let entry = entry.map_err(|e| self.io_error("reading the staging directory", e))?;
            let destination = self.target.join(entry.file_name());
            if fs::symlink_metadata(&destination).is_ok() {
                return Err(self.io_error(
                    &destination.display().to_string(),
                    io::Error::new(io::ErrorKind::AlreadyExists, "appeared during the restore"),
                ));
            }
            fs::rename(entry.path(), &destination)
                .map_err(|e| self.io_error(&format!("moving into {}", destination.display()), e))?;
        }
        fs::remove_dir(&staging).map_err(|e| self.io_error("removing the staging directory", e))?;
        self.staging = None;
        self.created = None;
        Ok(())
    }

    /// Cuts a staged regular file down to `len` bytes, keeping its modification time: a file that shrank while
    /// it was backed up is archived padded with zeros (tar needs the size declared up front), and the padding
    /// is not data.
    pub fn truncate_staged(&self, relative: &Path, len: u64) -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let fail = |e: io::Error| self.io_error(&format!("cutting {} to the bytes read", relative.display()), e);
        let file = fs::OpenOptions::new()
            .write(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(self.staging().join(relative))
            .map_err(fail)?;
        let metadata = file.metadata().map_err(fail)?;
        if !metadata.is_file() || metadata.len() < len {
            return Err(fail(io::Error::other("not the regular file the snapshot describes")));
        }
        file.set_len(len).map_err(fail)?;
        filetime::set_file_handle_times(&file, None, Some(FileTime::from_last_modification_time(&metadata)))
            .map_err(fail)
    }
}

impl Drop for Extraction {
    fn drop(&mut self) {
        // Not committed: the target is left exactly as it was, down to the directories made for it.
        if let Some(staging) = self.staging.take() {
            let _ = fs::remove_dir_all(staging);
            if let Some(mtime) = self.target_mtime {
                let _ = filetime::set_file_mtime(&self.target, mtime);
            }
        }
        if let Some(created) = self.created.take() {
            for dir in self.target.ancestors() {
                if fs::remove_dir(dir).is_err() || dir == created {
                    break;
                }
            }
        }
    }
}

/// The highest directory of `path` (itself or an ancestor) that does not exist: what `create_dir_all` makes.
fn highest_missing(path: &Path) -> Option<PathBuf> {
    let mut missing = None;
    for dir in path.ancestors() {
        if fs::symlink_metadata(dir).is_ok() {
            break;
        }
        missing = Some(dir.to_path_buf());
    }
    missing
}

pub(crate) fn is_symlink(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

pub(crate) fn parent_of(relative: &Path) -> &Path {
    relative.parent().unwrap_or(Path::new(""))
}

/// The entry path as a clean relative path, or why it is unsafe.
pub(crate) fn safe_relative(path: &Path) -> std::result::Result<PathBuf, &'static str> {
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err("the path contains `..`"),
            Component::RootDir | Component::Prefix(_) => return Err("the path is absolute"),
        }
    }
    if clean.as_os_str().is_empty() {
        return Err("the path is empty");
    }
    Ok(clean)
}

/// One step of a path being resolved.
enum PathStep {
    Root,
    Up,
    Name(OsString),
}

fn steps(path: &Path) -> Vec<PathStep> {
    path.components()
        .filter_map(|component| match component {
            Component::Normal(name) => Some(PathStep::Name(name.to_os_string())),
            Component::ParentDir => Some(PathStep::Up),
            Component::RootDir | Component::Prefix(_) => Some(PathStep::Root),
            Component::CurDir => None,
        })
        .collect()
}

/// Whether `path`, taken from the directory `base` (relative to `root`), stays inside `root` when resolved the
/// way the kernel would: symlinks already in the tree are followed, and `..` climbs from where they led.
/// Components that do not exist are taken as written, so a dangling link is fine as long as it points inside.
pub(crate) fn resolves_inside(root: &Path, base: &Path, path: &Path) -> bool {
    // A stack of the steps still to take, the next one last.
    let mut pending: Vec<PathStep> = steps(base).into_iter().chain(steps(path)).collect();
    pending.reverse();
    let mut position = PathBuf::new();
    let mut hops = 0;
    while let Some(step) = pending.pop() {
        match step {
            PathStep::Root => return false,
            PathStep::Up => {
                if !position.pop() {
                    return false;
                }
            }
            PathStep::Name(name) => {
                position.push(name);
                if let Ok(target) = fs::read_link(root.join(&position)) {
                    hops += 1;
                    if hops > MAX_LINK_HOPS {
                        return false;
                    }
                    position.pop();
                    pending.extend(steps(&target).into_iter().rev());
                }
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_paths_are_recognised() {
        assert_eq!(safe_relative(Path::new("./a/b")).unwrap(), PathBuf::from("a/b"));
        assert!(safe_relative(Path::new("a/../../etc/passwd")).is_err());
        assert!(safe_relative(Path::new("/etc/passwd")).is_err());
        assert!(safe_relative(Path::new(".")).is_err());
    }

    #[test]
    fn symlinks_must_resolve_inside() {
        let root = tempfile::tempdir().unwrap();
        let inside = |base: &str, target: &str| resolves_inside(root.path(), Path::new(base), Path::new(target));
        assert!(inside("a", "../b"));
        assert!(inside("a", "c/d"));
        assert!(inside("", "./missing.jpg"));
        assert!(!inside("a", "../../etc"));
        assert!(!inside("", "/etc/passwd"));
        assert!(!inside("", ".."));
    }

    #[test]
    fn symlinks_are_followed_when_resolving() {
        let root = tempfile::tempdir().unwrap();
        let inside = |base: &str, target: &str| resolves_inside(root.path(), Path::new(base), Path::new(target));
        std::os::unix::fs::symlink(".", root.path().join("here")).unwrap();
        assert!(inside("", "here/x"));
        assert!(!inside("", "here/.."), "`here` is the root itself, so `..` leaves it");
        fs::create_dir(root.path().join("d")).unwrap();
        std::os::unix::fs::symlink("../here/..", root.path().join("d/up")).unwrap();
        assert!(!inside("d", "up"));
        assert!(!inside("", "d/up/anything"));
        std::os::unix::fs::symlink("loop", root.path().join("loop")).unwrap();
        assert!(!inside("", "loop/x"), "a link loop never resolves");
    }
}
