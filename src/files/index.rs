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
    /// Set when the file changed while it was read: the archive then does not hold it as it was at any moment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<Incomplete>,
}

/// How a file changed while the backup read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Fewer bytes could be read than its size when opened: the archive pads it with zeros (tar needs the
    /// declared size), and a restore cuts it back to the bytes read.
    Shrank,
    /// It held more than its size when opened: the archive holds only that many bytes, the rest is missing.
    Grew,
    /// Same size, but its modification or change time moved during the read: the bytes may mix old and new.
    Modified,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Change::Shrank => "shrank",
            Change::Grew => "grew",
            Change::Modified => "was modified",
        })
    }
}

/// What was stored of a file that changed while it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incomplete {
    pub change: Change,
    /// Bytes of the file actually read: what a restore gives back (the index's `size` and `sha256` are of them).
    pub read: u64,
    /// Bytes the tar entry declares (the size when the file was opened); beyond `read` they are zero padding.
    pub archived: u64,
}

impl Incomplete {
    /// Zero bytes the archive holds beyond what was read.
    pub fn padding(&self) -> u64 {
        self.archived.saturating_sub(self.read)
    }

    /// One line for people: `shrank while it was read (1000 of 80000 bytes read)`.
    pub fn describe(&self) -> String {
        match self.change {
            Change::Shrank => {
                format!(
                    "shrank while it was read: {} bytes read of the {} it had when opened",
                    self.read, self.archived
                )
            }
            Change::Grew => format!("grew while it was read: only its first {} bytes are stored", self.read),
            Change::Modified => "was modified while it was read: its stored bytes may mix old and new".to_string(),
        }
    }
}

/// A file stored incomplete, named in the manifest's private part (the public part carries only a count).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncompleteFile {
    /// Path relative to the source root, as in the index.
    pub path: String,
    /// The path's bytes in hex when the name is not valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_hex: Option<String>,
    #[serde(flatten)]
    pub incomplete: Incomplete,
}

impl IncompleteFile {
    /// The exact relative path (from `path_hex` when the name is not UTF-8).
    pub fn relative_path(&self) -> std::path::PathBuf {
        use std::os::unix::ffi::OsStringExt;
        match self.path_hex.as_deref().and_then(|h| hex::decode(h).ok()) {
            Some(raw) => std::path::PathBuf::from(std::ffi::OsString::from_vec(raw)),
            None => std::path::PathBuf::from(&self.path),
        }
    }

    pub fn describe(&self) -> String {
        format!("{} {}", self.path, self.incomplete.describe())
    }
}
