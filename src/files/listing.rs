//! A comparable description of a directory tree: what a restore must reproduce exactly.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::excludes::Excludes;

/// Relative path → "kind mode mtime [size sha256 | -> target]", for every entry below `root` that
/// `excludes` keeps. Two trees with equal listings hold the same files, links, directories, modes and times.
pub fn tree_listing(root: &Path, excludes: &Excludes) -> io::Result<BTreeMap<String, String>> {
    let mut listing = BTreeMap::new();
    for entry in excludes.walk(root) {
        let entry = entry.map_err(io::Error::other)?;
        let relative = entry.path().strip_prefix(root).map_err(io::Error::other)?;
        let meta = entry.path().symlink_metadata()?;
        let head = format!("{:o} {}", meta.mode() & 0o7777, meta.mtime());
        let description = if meta.file_type().is_symlink() {
            format!("symlink -> {}", std::fs::read_link(entry.path())?.display())
        } else if meta.is_dir() {
            format!("dir {head}")
        } else {
            format!("file {head} {} {}", meta.len(), sha256_file(entry.path())?)
        };
        listing.insert(relative.to_string_lossy().into_owned(), description);
    }
    Ok(listing)
}

pub(crate) fn sha256_file(path: &Path) -> io::Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}
