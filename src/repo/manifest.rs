//! The manifest: one JSON object per snapshot, written last, the snapshot's commit point.
//!
//! What listing, retention and integrity checks need (ids, times, sizes, hashes, object keys) is plain JSON,
//! readable without the identity. What describes user data (database and table names, row counts, file counts,
//! paths) is in `private`: age-encrypted JSON in ASCII armor. docs/repository-format.md is the reference.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::snapshot_id::SnapshotId;
use crate::files::IncompleteFile;
use crate::pipeline::Sealed;

/// Version of the repository format this build writes and reads (`config.json`), and of a manifest whose sources
/// are all stored as tar or pg_dump objects.
pub const FORMAT_VERSION: u32 = 1;
/// Version of a manifest with a chunked files source: a dr that knows only format 1 must not mistake one for a
/// snapshot it can restore. The newest manifest format this build reads.
pub const CHUNKED_FORMAT_VERSION: u32 = 2;

/// The manifest format for these sources: the oldest that can describe them, so older dr versions keep reading
/// every snapshot they can restore.
pub fn format_for(sources: &[SourceEntry]) -> u32 {
    if sources.iter().any(|s| s.format == Some(StorageFormat::Chunked)) {
        CHUNKED_FORMAT_VERSION
    } else {
        FORMAT_VERSION
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub id: SnapshotId,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub hostname: String,
    pub dr_version: String,
    pub sources: Vec<SourceEntry>,
    /// [`PrivateManifest`] as JSON, age-encrypted to the repository's recipients, ASCII-armored.
    pub private: String,
}

impl Manifest {
    pub fn source(&self, name: &str) -> Option<&SourceEntry> {
        self.sources.iter().find(|s| s.name == name)
    }

    pub fn stored_size(&self) -> u64 {
        self.sources.iter().map(SourceEntry::stored_size).sum()
    }

    pub fn objects(&self) -> impl Iterator<Item = &ObjectEntry> {
        self.sources.iter().flat_map(|s| s.objects.iter())
    }

    /// When the snapshot's data was consistent: the earliest of its sources' `consistent_at` (what a restore
    /// gets back to); `None` for a snapshot without sources.
    pub fn consistent_at(&self) -> Option<DateTime<Utc>> {
        self.sources.iter().map(|s| s.consistent_at).min()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    Postgres,
    Files,
}

impl std::fmt::Display for SourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SourceKind::Postgres => "postgres",
            SourceKind::Files => "files",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceEntry {
    pub name: String,
    pub kind: SourceKind,
    /// The instant the data describes: the database snapshot's `now()`, or when the file walk began.
    pub consistent_at: DateTime<Utc>,
    pub objects: Vec<ObjectEntry>,
    /// How a files source is stored; absent for a database and for a tar files source (format 1 manifests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<StorageFormat>,
    /// A chunked source's sizes: its data is in shared packs, not in `objects`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunked: Option<ChunkedSizes>,
    /// Files of a files source that changed while they were read and are stored incomplete. Only the count is
    /// public; the paths and what happened are in the private part (and the index).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub incomplete_files: u64,
}

/// How a files source's data is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageFormat {
    /// A [`ObjectRole::Tar`] archive and its [`ObjectRole::Index`].
    Tar,
    /// A [`ObjectRole::Tree`] naming chunks in the repository's packs.
    Chunked,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The sizes of a chunked source, public like a tar source's object sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkedSizes {
    /// Bytes of the source's files (what a restore writes).
    pub bytes: u64,
    /// Bytes of packs (and chunks) this backup added to the repository: the rest was there already.
    pub added_bytes: u64,
    pub added_chunks: u64,
}

impl SourceEntry {
    /// Bytes this source put in the store: its objects, and for a chunked source the packs it added (chunks it
    /// shares with other snapshots are counted by the snapshot that stored them first).
    pub fn stored_size(&self) -> u64 {
        self.objects.iter().map(|o| o.stored_size).sum::<u64>() + self.chunked.map_or(0, |c| c.added_bytes)
    }

    /// Size before compression and encryption: what the source produced (a chunked source's files' bytes).
    pub fn plain_size(&self) -> u64 {
        match self.chunked {
            Some(chunked) => chunked.bytes,
            None => self.objects.iter().map(|o| o.plain_size).sum(),
        }
    }

    pub fn object(&self, role: ObjectRole) -> Option<&ObjectEntry> {
        self.objects.iter().find(|o| o.role == role)
    }
}

/// What an object holds, and so how to read it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectRole {
    /// `pg_dump --format=custom --compress=0` output.
    PgDump,
    /// `pg_dumpall --globals-only` output (SQL).
    Globals,
    /// A tar stream of a files source.
    Tar,
    /// One JSON line per tar entry: path, type, size, mode, mtime, SHA-256.
    Index,
    /// A chunked files source's tree: the chunks (in packs) holding its JSON lines, one per entry.
    Tree,
}

impl ObjectRole {
    /// The object's file name inside its snapshot and source.
    pub fn file_name(self) -> &'static str {
        match self {
            ObjectRole::PgDump => "pg_dump.zst.age",
            ObjectRole::Globals => "globals.sql.zst.age",
            ObjectRole::Tar => "files.tar.zst.age",
            ObjectRole::Index => "index.jsonl.zst.age",
            ObjectRole::Tree => "tree.json.zst.age",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectEntry {
    pub key: String,
    pub role: ObjectRole,
    /// Size in the store (of the age file).
    pub stored_size: u64,
    /// SHA-256 of the stored bytes, lowercase hex.
    pub sha256: String,
    /// Size of the stream before compression and encryption.
    pub plain_size: u64,
}

impl ObjectEntry {
    pub fn new(key: String, role: ObjectRole, sealed: Sealed) -> ObjectEntry {
        ObjectEntry { key, role, stored_size: sealed.stored_size, sha256: sealed.sha256, plain_size: sealed.plain_size }
    }

    /// What a read of this object must produce.
    pub fn expected(&self) -> Sealed {
        Sealed { stored_size: self.stored_size, sha256: self.sha256.clone(), plain_size: self.plain_size }
    }
}

/// The encrypted half: facts about the data itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PrivateManifest {
    pub sources: Vec<SourceDetails>,
}

impl PrivateManifest {
    pub fn postgres(&self, name: &str) -> Option<&PostgresDetails> {
        self.sources.iter().find_map(|s| match s {
            SourceDetails::Postgres(p) if p.name == name => Some(p),
            _ => None,
        })
    }

    pub fn files(&self, name: &str) -> Option<&FilesDetails> {
        self.sources.iter().find_map(|s| match s {
            SourceDetails::Files(f) if f.name == name => Some(f),
            _ => None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceDetails {
    Postgres(PostgresDetails),
    Files(FilesDetails),
}

/// Facts read inside the same exported snapshot that pg_dump used: they describe exactly the dumped data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PostgresDetails {
    pub name: String,
    pub database: String,
    pub server_version: String,
    pub server_version_num: i32,
    pub encoding: String,
    pub collate: String,
    pub ctype: String,
    pub pg_dump_version: String,
    /// Exact row count of every table pg_dump dumps data for.
    pub tables: Vec<TableRows>,
    pub globals: Option<GlobalsDetails>,
    /// The database's owner, settings and grants, read in the same snapshot; `None` in snapshots taken before
    /// dr recorded them (a restore then leaves the database owned by the restoring user, as it always did).
    /// (Boxed: it would otherwise make every [`SourceDetails`] as large as this variant.)
    #[serde(default)]
    pub database_properties: Option<Box<DatabaseProperties>>,
    /// Where this dump stands in the source's change stream, when it is a base for point-in-time restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamBase>,
}

/// A base backup's place in a change stream (`crate::stream`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamBase {
    /// The stream generation (one replication slot's life) whose changes carry this base forward.
    pub generation: String,
    /// `txid_current_snapshot()` in the dump's snapshot (`xmin:xmax:xip,...`, with epochs): the transactions
    /// it sees are in the dump, all others are replayed from the stream.
    pub snapshot: String,
    /// The schema's digest in the dump's snapshot: segments captured under another schema cannot be replayed
    /// onto this base.
    #[serde(default)]
    pub schema: String,
}

impl PostgresDetails {
    pub fn server_major(&self) -> u32 {
        (self.server_version_num / 10_000) as u32
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRows {
    pub schema: String,
    pub table: String,
    pub rows: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalsDetails {
    /// False when the role could not read password hashes and `--no-role-passwords` was used.
    pub role_passwords: bool,
    /// Roles of the cluster at backup time (without the built-in `pg_*` roles).
    pub roles: Vec<String>,
}

/// What `pg_dump --create` would restore about the database itself, and a plain pg_dump archive lacks: a
/// restore into a database that dr creates applies it (see [`crate::pg::database`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseProperties {
    pub owner: String,
    /// `CONNECTION LIMIT`; -1 for none.
    pub connection_limit: i32,
    pub comment: Option<String>,
    /// The database's grants (`datacl`, exploded), in order; `None` when it has the default privileges (owner:
    /// all; PUBLIC: CONNECT and TEMPORARY). An empty list means every privilege was revoked, the owner's too.
    pub grants: Option<Vec<DatabaseGrant>>,
    /// `ALTER DATABASE ... SET` (no role) and `ALTER ROLE ... IN DATABASE ... SET`, in order.
    pub settings: Vec<DatabaseSetting>,
}

/// One privilege on the database held by one grantee.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseGrant {
    /// The role; `None` for PUBLIC.
    pub grantee: Option<String>,
    /// `CREATE`, `TEMPORARY` or `CONNECT`.
    pub privilege: String,
    /// Held `WITH GRANT OPTION`.
    pub grantable: bool,
}

/// One setting of the database, for every role (`role` is `None`) or for one role in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseSetting {
    pub role: Option<String>,
    pub name: String,
    /// As PostgreSQL stores it (`pg_db_role_setting`): a list setting such as `search_path` is one string,
    /// `app, public, "$user"`.
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilesDetails {
    pub name: String,
    pub root: String,
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
    /// Sum of regular files' sizes.
    pub bytes: u64,
    /// Entries left out, with the reason (vanished during the walk, special files).
    pub skipped: Vec<String>,
    /// Files that changed while they were read: stored as far as they were read (docs/repository-format.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub incomplete: Vec<IncompleteFile>,
    /// Objects of a bucket source replaced between the listing and their download: the snapshot holds the
    /// newer version, whole, as `key: ...`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replaced: Vec<String>,
}

impl FilesDetails {
    /// The bytes a restore gives back: `bytes` (what the tar entries declare) without the zero padding of
    /// files that shrank while they were read.
    pub fn restored_bytes(&self) -> u64 {
        self.bytes - self.incomplete.iter().map(|f| f.incomplete.padding()).sum::<u64>().min(self.bytes)
    }
}
