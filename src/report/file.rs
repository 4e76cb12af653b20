//! `--output FILE`: a report a web server or a mail job picks up must never be seen half-written.

use std::path::Path;

use crate::error::{Error, Result};

/// [`crate::files::write_atomically`], naming the report in its error.
pub fn write_atomically(path: &Path, contents: &[u8]) -> Result<()> {
    crate::files::write_atomically(path, contents)
        .map_err(|e| Error::io(format!("writing the report to {}", path.display()), e))
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
