//! The per-file index stored beside each tar stream: one JSON object per line, in archive order.
//!
//! It lets a drill (or a person with `jq`) check a restored tree file by file without reading the tar.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// Path relative to the source root, `/`-separated.
    pub path: String,
    /// The path's bytes in hex, present only when the name is not valid UTF-8 (`path` is then lossy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_hex: Option<String>,
    #[serde(rename = "type")]
    pub kind: EntryKind,
    /// Permission bits (e.g. 420 = 0o644).
    pub mode: u32,
    /// Modification time, seconds since the epoch (tar keeps whole seconds).
    pub mtime: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// SHA-256 of a regular file's contents as archived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}
