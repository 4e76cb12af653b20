//! Files sources: a directory tree as a tar stream (plus a per-file index), and back; and the files side of the
//! chunked format (the tree, its metadata walk and restore, the files cache).

use crate::error::{Error, Failure};

mod apply_metadata;
mod archive;
mod atomic;
mod bucket;
mod cache;
mod excludes;
mod extract;
mod index;
mod listing;
mod object_info;
mod restore_tree;
mod scan;
mod selection;
mod tree;
mod walk;

/// Checks a `[[files]]` source: its exclude patterns compile.
pub fn validate(source: &crate::config::FilesSource) -> crate::Result<()> {
    let invalid = |message: String| crate::Error::ConfigInvalid(format!("files source {:?}: {message}", source.name));
    Excludes::new(&source.exclude).map_err(|e| invalid(e.to_string()))?;
    if source.bucket_url().is_some() {
        if source.format != crate::config::FilesFormat::Chunked {
            return Err(invalid("a bucket (s3://) source is stored chunked; remove `format = \"tar\"`".to_string()));
        }
        if source.concurrency.is_some_and(|n| !(1..=64).contains(&n)) {
            return Err(invalid("concurrency must be between 1 and 64".to_string()));
        }
        crate::store::s3::S3Options::try_from(source)?;
        return Ok(());
    }
    let bucket_keys = [
        ("endpoint", source.endpoint.is_some()),
        ("region", source.region.is_some()),
        ("profile", source.profile.is_some()),
        ("path_style", source.path_style.is_some()),
        ("concurrency", source.concurrency.is_some()),
    ];
    if let Some((key, _)) = bucket_keys.iter().find(|(_, set)| *set) {
        return Err(invalid(format!("`{key}` applies to bucket sources only (path = \"s3://bucket/prefix\")")));
    }
    Ok(())
}

pub use archive::{ArchiveSummary, change_during_read, check_root, write_archive};
pub(crate) use atomic::sync_directory;
pub use atomic::write_atomically;
pub use bucket::bucket_entries;
pub use cache::{CacheHeader, CacheReader, CacheWriter, cache_file_path, default_cache_dir};
pub use excludes::{BadExclude, Excludes};
pub use extract::{DirectoryState, ExtractSummary, Extraction, inspect_directory};
pub(crate) use extract::{STAGING_PREFIX, parent_of, resolves_inside};
pub use index::{Change, EntryKind, Incomplete, IncompleteFile, IndexEntry};
pub(crate) use listing::sha256_file;
pub use listing::tree_listing;
pub use object_info::ObjectInfo;
pub use restore_tree::{FileSlot, TreeExtraction};
pub use scan::{SizeScan, scan_size_for_progress};
pub use selection::{Selection, normalize_filter, path_selected};
pub use tree::{TreeCounts, TreeEntry, TreeKind, TreeReader, TreeWriter, entry_line, walk_order};
pub use walk::{FileStat, MetadataWalk, WalkItem};

/// A files source's tree could not be read for a backup: `text` names the path, `cause` is the failure.
pub(crate) fn backup_error(
    source_name: &str,
    text: impl Into<String>,
    cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> Error {
    Error::Files {
        source_name: source_name.to_string(),
        failure: Failure::new(text, cause),
        hint: "fix the permissions, or exclude the path in the source's `exclude` list".to_string(),
    }
}

/// A files source's restore target could not be inspected or written: `text` names the path, `cause` is the
/// failure. Excluding paths in the source would not help here; the target is what to look at.
pub(crate) fn restore_error(
    source_name: &str,
    text: impl Into<String>,
    cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> Error {
    Error::Files {
        source_name: source_name.to_string(),
        failure: Failure::new(text, cause),
        hint: format!(
            "check that dr may write there and that the disk has room, or restore somewhere else with --into \
             {source_name}=DIRECTORY"
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    #[test]
    fn a_files_error_keeps_its_cause_and_says_what_helps_on_its_side() {
        let denied = || io::Error::from(io::ErrorKind::PermissionDenied);
        let backup = super::backup_error("uploads", format!("/srv/a: {}", denied()), denied());
        let restore = super::restore_error("uploads", format!("/restore/a: {}", denied()), denied());
        assert_eq!(backup.to_string(), format!("files source \"uploads\": /srv/a: {}", denied()));
        let cause = std::error::Error::source(&backup).and_then(std::error::Error::source);
        assert!(cause.is_some_and(|c| c.is::<io::Error>()), "the I/O error is the cause");
        assert!(backup.hint().unwrap().contains("exclude"), "{:?}", backup.hint());
        let hint = restore.hint().unwrap();
        assert!(!hint.contains("exclude") && hint.contains("--into uploads=DIRECTORY"), "{hint}");
    }
}
