//! Replacing a small file whole: reports, the service's job state, a recovery's state. A reader (a web server,
//! a resumed `dr recover`, the service after a crash) sees the old contents or the new, never a mix.

use std::io::Write;
use std::path::Path;

/// Writes `contents` to a hidden temporary file next to `path`, flushes it to disk and renames it over `path`.
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
    Ok(())
}
