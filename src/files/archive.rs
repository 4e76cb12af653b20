//! Writing a directory tree as a tar stream, with its index, in one pass.
//!
//! Kept: regular files, directories (also empty ones), symlinks (as links, never followed), modes, mtimes
//! (whole seconds), numeric owners. Left out, and listed in the manifest: sockets, FIFOs and devices, and
//! files that vanish between the directory listing and the read (a normal race on a live uploads directory).
//! A file that cannot be read (permissions) fails the backup: a backup that silently misses files is worse
//! than one that fails loudly; the message says to fix the permissions or exclude the path.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

use super::excludes::Excludes;
use super::index::{EntryKind, IndexEntry};
use crate::error::{Error, Result};

/// Counts of what went into the archive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveSummary {
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
    pub bytes: u64,
    pub skipped: Vec<String>,
    /// Symlinks pointing outside the source, as `path -> target` (a restore needs `external_symlinks`).
    pub external_symlinks: Vec<String>,
}

/// Walks `root` and writes every kept entry to `tar_out` and a JSON line per entry to `index_out`.
pub fn write_archive(
    source_name: &str,
    root: &Path,
    excludes: &Excludes,
    tar_out: &mut dyn Write,
    index_out: &mut dyn Write,
) -> Result<ArchiveSummary> {
    let fail = |message: String| Error::Files { source_name: source_name.to_string(), message };
    check_root(source_name, root)?;
    let mut builder = tar::Builder::new(tar_out);
    let mut summary = ArchiveSummary::default();
    let walker = walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| e.path().strip_prefix(root).map_or(true, |relative| !excludes.is_excluded(relative)));
    for entry in walker {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) if e.io_error().is_some_and(|io| io.kind() == io::ErrorKind::NotFound) => {
                summary.skipped.push(format!("{}: vanished during the backup", display_path(&e)));
                continue;
            }
            Err(e) => return Err(fail(e.to_string())),
        };
        let relative = entry.path().strip_prefix(root).unwrap_or(entry.path());
        let written = archive_entry(&mut builder, root, entry.path(), relative, index_out, &mut summary)
            .map_err(|e| fail(format!("{}: {e}", entry.path().display())))?;
        if let Some(reason) = written {
            summary.skipped.push(format!("{}: {reason}", relative.display()));
        }
    }
    builder.finish().map_err(|e| fail(format!("finishing the archive: {e}")))?;
    Ok(summary)
}

/// Checks that a files source's root is a directory that can be read, naming what is wrong otherwise: a
/// missing root is a typo or an unmounted volume, not a permission problem.
pub fn check_root(source_name: &str, root: &Path) -> Result<()> {
    let source_name = source_name.to_string();
    match fs::metadata(root) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(Error::NotADirectory { source_name, path: root.to_path_buf(), restore: false }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err(Error::FilesRootMissing { source_name, path: root.to_path_buf() })
        }
        Err(e) => Err(Error::Files { source_name, message: format!("{}: {e}", root.display()) }),
    }
}

fn display_path(e: &walkdir::Error) -> String {
    e.path().map_or_else(|| "?".to_string(), |p| p.display().to_string())
}

/// Writes one entry; `Ok(Some(reason))` when it was left out.
fn archive_entry(
    builder: &mut tar::Builder<&mut dyn Write>,
    root: &Path,
    path: &Path,
    relative: &Path,
    index_out: &mut dyn Write,
    summary: &mut ArchiveSummary,
) -> io::Result<Option<&'static str>> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Some("vanished during the backup"));
        }
        Err(e) => return Err(e),
    };
    let file_type = meta.file_type();
    let mut header = Header::new_gnu();
    header.set_mode(meta.mode() & 0o7777);
    header.set_mtime(meta.mtime().max(0) as u64);
    header.set_uid(u64::from(meta.uid()));
    header.set_gid(u64::from(meta.gid()));
    let mut index = IndexEntry {
        path: relative.to_string_lossy().into_owned(),
        path_hex: std::str::from_utf8(relative.as_os_str().as_bytes())
            .is_err()
            .then(|| hex::encode(relative.as_os_str().as_bytes())),
        kind: EntryKind::File,
        mode: meta.mode() & 0o7777,
        mtime: meta.mtime(),
        size: None,
        sha256: None,
        target: None,
    };
    if file_type.is_dir() {
        header.set_entry_type(EntryType::Directory);
        header.set_size(0);
        builder.append_data(&mut header, relative, io::empty())?;
        index.kind = EntryKind::Dir;
        summary.directories += 1;
    } else if file_type.is_symlink() {
        let target = match fs::read_link(path) {
            Ok(target) => target,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Some("vanished during the backup"));
            }
            Err(e) => return Err(e),
        };
        header.set_entry_type(EntryType::Symlink);
        header.set_size(0);
        builder.append_link(&mut header, relative, &target)?;
        index.kind = EntryKind::Symlink;
        index.target = Some(target.to_string_lossy().into_owned());
        summary.symlinks += 1;
        if !super::extract::resolves_inside(root, super::extract::parent_of(relative), &target) {
            summary.external_symlinks.push(format!("{} -> {}", relative.display(), target.display()));
        }
    } else if file_type.is_file() {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Some("vanished during the backup"));
            }
            Err(e) => return Err(e),
        };
        // The size of the file as opened; the archive holds exactly that many bytes even if it changes.
        let size = file.metadata()?.len();
        header.set_entry_type(EntryType::Regular);
        header.set_size(size);
        let mut reader = ExactReader { inner: file.take(size), remaining: size, hasher: Sha256::new(), shrank: false };
        builder.append_data(&mut header, relative, &mut reader)?;
        if reader.shrank {
            tracing::warn!(path = %path.display(), "file shrank while being read; archived padded with zeros");
        }
        index.size = Some(size);
        index.sha256 = Some(hex::encode(reader.hasher.finalize()));
        summary.files += 1;
        summary.bytes += size;
    } else {
        return Ok(Some("special file (socket, FIFO or device) not archived"));
    }
    serde_json::to_writer(&mut *index_out, &index)?;
    index_out.write_all(b"\n")?;
    Ok(None)
}

/// Yields exactly `remaining` bytes: the file's, then zeros if it shrank; hashes what it yields.
struct ExactReader<R> {
    inner: R,
    remaining: u64,
    hasher: Sha256,
    shrank: bool,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.remaining.min(usize::MAX as u64) as usize);
        let mut n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            self.shrank = true;
            buf[..want].fill(0);
            n = want;
        }
        self.remaining -= n as u64;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}
