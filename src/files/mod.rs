//! Files sources: a directory tree as a tar stream (plus a per-file index), and back.

mod archive;
mod atomic;
mod excludes;
mod extract;
mod index;
mod listing;
mod scan;

/// Checks a `[[files]]` source: its exclude patterns compile.
pub fn validate(source: &crate::config::FilesSource) -> crate::Result<()> {
    Excludes::new(&source.exclude)
        .map(|_| ())
        .map_err(|e| crate::Error::ConfigInvalid(format!("files source {:?}: {e}", source.name)))
}

pub use archive::{ArchiveSummary, check_root, write_archive};
pub(crate) use atomic::sync_directory;
pub use atomic::write_atomically;
pub use excludes::Excludes;
pub(crate) use extract::STAGING_PREFIX;
pub use extract::{DirectoryState, ExtractSummary, Extraction, inspect_directory};
pub use index::{Change, EntryKind, Incomplete, IncompleteFile, IndexEntry};
pub(crate) use listing::sha256_file;
pub use listing::tree_listing;
pub use scan::{SizeScan, scan_size_for_progress};
