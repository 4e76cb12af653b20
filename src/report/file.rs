//! `--output FILE`: a report a web server or a mail job picks up must never be seen half-written.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Writes `contents` to a hidden temporary file next to `path`, flushes it to disk and renames it over `path`,
/// so readers see the old report or the new one, never a mix. A new file is readable by its owner only (a
/// report names databases and tables, which the repository keeps encrypted); a file being replaced keeps its
/// mode, so a `chmod` made for a web server survives the weekly run.
pub fn write_atomically(path: &Path, contents: &[u8]) -> Result<()> {
    let context = || format!("writing the report to {}", path.display());
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut temp =
        tempfile::Builder::new().prefix(".dr-report-").tempfile_in(dir).map_err(|e| Error::io(context(), e))?;
    if let Ok(existing) = std::fs::metadata(path) {
        temp.as_file().set_permissions(existing.permissions()).map_err(|e| Error::io(context(), e))?;
    }
    temp.write_all(contents).map_err(|e| Error::io(context(), e))?;
    temp.as_file().sync_all().map_err(|e| Error::io(context(), e))?;
    temp.persist(path).map_err(|e| Error::io(context(), e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_file_is_replaced_whole_and_keeps_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.html");
        write_atomically(&path, b"first").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_atomically(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["report.html"], "no temporary file left behind");
        let missing_dir = dir.path().join("nope/report.html");
        let err = write_atomically(&missing_dir, b"x").unwrap_err();
        assert!(err.to_string().contains("nope/report.html"), "{err}");
    }
}
