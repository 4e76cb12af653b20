//! Writing a directory tree as a tar stream, with its index, in one pass.
//!
//! Kept: regular files, directories (also empty ones), symlinks (as links, never followed), modes, mtimes
//! (whole seconds), numeric owners. Left out, and listed in the manifest: sockets, FIFOs and devices, and
//! files that vanish between the directory listing and the read (a normal race on a live uploads directory).
//! A file that cannot be read (permissions) fails the backup: a backup that silently misses files is worse
//! than one that fails loudly; the message says to fix the permissions or exclude the path.
//! A file that changes while it is read (a growing log, a file being rewritten) cannot be stored as it was at
//! any one moment: it is stored as far as it was read, and listed as incomplete in its index entry and in the
//! manifest, so that the backup, `dr snapshots`, `dr verify`, a restore and the report can say so.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

use super::excludes::Excludes;
use super::index::{Change, EntryKind, Incomplete, IncompleteFile, IndexEntry};
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
    /// Regular files that changed while they were read, stored as far as they were read.
    pub incomplete: Vec<IncompleteFile>,
}

/// Walks `root` and writes every kept entry to `tar_out` and a JSON line per entry to `index_out`.
pub fn write_archive(
    source_name: &str,
    root: &Path,
    excludes: &Excludes,
    tar_out: &mut dyn Write,
    index_out: &mut dyn Write,
) -> Result<ArchiveSummary> {
    check_root(source_name, root)?;
    let mut builder = tar::Builder::new(tar_out);
    let mut summary = ArchiveSummary::default();
    for entry in excludes.walk(root) {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) if e.io_error().is_some_and(|io| io.kind() == io::ErrorKind::NotFound) => {
                summary.skipped.push(format!("{}: vanished during the backup", display_path(&e)));
                continue;
            }
            Err(e) => return Err(super::backup_error(source_name, e.to_string(), e)),
        };
        let relative = entry.path().strip_prefix(root).unwrap_or(entry.path());
        let written = archive_entry(&mut builder, root, entry.path(), relative, index_out, &mut summary)
            .map_err(|e| super::backup_error(source_name, format!("{}: {e}", entry.path().display()), e))?;
        if let Some(reason) = written {
            summary.skipped.push(format!("{}: {reason}", relative.display()));
        }
    }
    builder.finish().map_err(|e| super::backup_error(source_name, format!("finishing the archive: {e}"), e))?;
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
        Err(e) => Err(super::backup_error(&source_name, format!("{}: {e}", root.display()), e)),
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
        incomplete: None,
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
        // tar needs the size before the data: the size of the file as opened. The archive holds exactly that
        // many bytes whatever happens next; what was really read, and the file's metadata after the read, tell
        // whether it changed meanwhile, and such a file is recorded as incomplete instead of stored wrong
        // without a word.
        let opened = file.metadata()?;
        let size = opened.len();
        header.set_entry_type(EntryType::Regular);
        header.set_size(size);
        let mut reader = DeclaredSize::new(&file, size);
        builder.append_data(&mut header, relative, &mut reader)?;
        let read = reader.read;
        index.size = Some(read);
        index.sha256 = Some(hex::encode(reader.hasher.finalize()));
        if let Some(change) = change_during_read(&file, &opened, read)? {
            let incomplete = Incomplete { change, read, archived: size };
            index.incomplete = Some(incomplete);
            summary.incomplete.push(IncompleteFile {
                path: index.path.clone(),
                path_hex: index.path_hex.clone(),
                incomplete,
            });
        }
        summary.files += 1;
        summary.bytes += size;
    } else {
        return Ok(Some("special file (socket, FIFO or device) not archived"));
    }
    serde_json::to_writer(&mut *index_out, &index)?;
    index_out.write_all(b"\n")?;
    Ok(None)
}

/// How the file changed while it was read, if it did: fewer bytes than its size when opened (shrank), more
/// (grew), or its size, modification or change time moved (modified in place, or cut after the read). A chunked
/// backup asks the same after reading a file (at most its size when opened), so both formats agree.
pub fn change_during_read(mut file: &File, opened: &fs::Metadata, read: u64) -> io::Result<Option<Change>> {
    if read < opened.len() {
        return Ok(Some(Change::Shrank));
    }
    let mut probe = [0u8; 1];
    let more = loop {
        match file.read(&mut probe) {
            Ok(n) => break n > 0,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    };
    let now = file.metadata()?;
    if more || now.len() > opened.len() {
        return Ok(Some(Change::Grew));
    }
    let moved = now.len() != opened.len()
        || (now.mtime(), now.mtime_nsec()) != (opened.mtime(), opened.mtime_nsec())
        || (now.ctime(), now.ctime_nsec()) != (opened.ctime(), opened.ctime_nsec());
    Ok(moved.then_some(Change::Modified))
}

/// Yields exactly the `remaining` bytes the tar header declared: the file's, then zeros if it ended early (tar
/// cannot take back a declared size). Only the file's own bytes are counted in `read` and hashed; once the
/// file ended, it is not read again, so bytes written later never follow the padding.
struct DeclaredSize<R> {
    inner: R,
    remaining: u64,
    read: u64,
    ended: bool,
    hasher: Sha256,
}

impl<R: Read> DeclaredSize<R> {
    fn new(inner: R, declared: u64) -> Self {
        DeclaredSize { inner, remaining: declared, read: 0, ended: false, hasher: Sha256::new() }
    }
}

impl<R: Read> Read for DeclaredSize<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = if self.ended { 0 } else { self.inner.read(&mut buf[..want])? };
        if n == 0 {
            self.ended = true;
            buf[..want].fill(0);
            self.remaining -= want as u64;
            return Ok(want);
        }
        self.read += n as u64;
        self.remaining -= n as u64;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;
    use std::io::Write as _;

    use super::*;

    fn archive_of(file: &File, opened: &fs::Metadata) -> (Vec<u8>, u64, Option<Change>) {
        let mut reader = DeclaredSize::new(file, opened.len());
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        let read = reader.read;
        (out, read, change_during_read(file, opened, read).unwrap())
    }

    #[test]
    fn a_file_that_shrinks_while_read_is_padded_to_its_declared_size_and_marked_shrank() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        fs::write(&path, vec![b'x'; 10_000]).unwrap();
        let file = File::open(&path).unwrap();
        let opened = file.metadata().unwrap();
        OpenOptions::new().write(true).open(&path).unwrap().set_len(1_000).unwrap();
        let (out, read, change) = archive_of(&file, &opened);
        assert_eq!(out.len(), 10_000, "tar needs the declared size");
        assert_eq!(read, 1_000);
        assert!(out[..1_000].iter().all(|&b| b == b'x') && out[1_000..].iter().all(|&b| b == 0));
        assert_eq!(change, Some(Change::Shrank));
    }

    #[test]
    fn a_file_that_grows_while_read_is_cut_at_its_declared_size_and_marked_grew() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        fs::write(&path, vec![b'x'; 1_000]).unwrap();
        let file = File::open(&path).unwrap();
        let opened = file.metadata().unwrap();
        OpenOptions::new().append(true).open(&path).unwrap().write_all(&[b'y'; 500]).unwrap();
        let (out, read, change) = archive_of(&file, &opened);
        assert_eq!((out.len(), read), (1_000, 1_000));
        assert_eq!(change, Some(Change::Grew));
    }

    #[test]
    fn a_file_rewritten_in_place_is_marked_modified_and_a_quiet_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        fs::write(&path, vec![b'x'; 1_000]).unwrap();
        let file = File::open(&path).unwrap();
        let opened = file.metadata().unwrap();
        assert_eq!(archive_of(&File::open(&path).unwrap(), &opened).2, None);
        std::thread::sleep(std::time::Duration::from_millis(20));
        OpenOptions::new().write(true).open(&path).unwrap().write_all(&[b'y'; 10]).unwrap();
        assert_eq!(archive_of(&file, &opened).2, Some(Change::Modified));
    }
}
