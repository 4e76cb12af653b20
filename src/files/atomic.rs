//! Replacing a small file whole: reports, the service's job state, a recovery's state. A reader (a web server,
//! a resumed `dr recover`, the service after a crash) sees the old contents or the new, never a mix.

use std::io::Write;
use std::path::Path;

/// Writes `contents` to a hidden temporary file next to `path`, flushes it to disk, renames it over `path` and
/// syncs the directory, so that the rename itself survives a crash.
/// A new file is readable by its owner only (reports and states name databases and tables, which the
/// repository keeps encrypted); a file being replaced keeps its mode, so a `chmod` made for a web server
/// survives the next write. The directory must exist.
pub fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut temp = tempfile::Builder::new().prefix(".dr-").tempfile_in(dir)?;
    if let Ok(existing) = std::fs::metadata(path) {
        temp.as_file().set_permissions(existing.permissions())?;
    }
    temp.write_all(contents)?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    sync_directory(dir)
}

/// Flushes a directory's entries to disk: after a rename into it, the new name is durable only once its
/// directory is synced (the file's own `fsync` does not cover it). The local store does this after every
/// write too.
pub fn sync_directory(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_replaced_file_keeps_its_mode_and_the_directory_is_synced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomically(&path, b"old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomically(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
        sync_directory(dir.path()).unwrap();
        assert!(sync_directory(&dir.path().join("missing")).is_err());
    }
}
