//! Object storage behind one async trait.
//!
//! A [`Store`] is a flat namespace of keys (`/`-separated, relative, no `.` or `..` components) holding
//! immutable objects. The repository layer decides what the keys mean; a store only moves bytes.
//!
//! Two rules every implementation keeps, because the repository's crash safety rests on them:
//! - an object becomes visible (to `get`, `head`, `list`) only when its writer's `finish` succeeded, whole;
//!   an aborted, dropped or crashed writer leaves nothing visible under the key;
//! - `put` is atomic: readers see the old state or the whole new object, never a part.
//!
//! Implementations: [`LocalStore`] (a directory), [`S3Store`] (an S3-compatible bucket), [`MemoryStore`]
//! (tests). Each promise of the trait is a named test in `tests/it/store_contract.rs`, run against all three
//! (and against [`Throttled`], the bandwidth limit that [`open`] wraps around any of them).

mod local;
mod memory;
pub mod s3;
pub mod throttle;

use std::fmt;
use std::path::PathBuf;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::config::RepositoryConfig;
use crate::error::{Error, Result};

pub use local::LocalStore;
pub use memory::MemoryStore;
pub use s3::{S3Options, S3Store};
pub use throttle::Throttled;

/// A streaming read of one object.
pub type ObjectReader = Pin<Box<dyn AsyncRead + Send>>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    pub modified: Option<DateTime<Utc>>,
}

/// An upload that was started and neither finished nor aborted: a writer killed before it could clean up
/// leaves one behind, never visible as an object but taking space (and on S3, billed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingUpload {
    /// The key the upload would have created.
    pub key: String,
    /// S3's upload id; a local store's hidden partial file (its name, beside the key's path).
    pub upload_id: String,
    pub initiated: Option<DateTime<Utc>>,
    pub kind: UploadKind,
}

/// What an unfinished upload is, in the store that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadKind {
    /// An S3 multipart upload: parts stored, never completed.
    Multipart,
    /// A local store's hidden `.NAME.partial-XXXX` file, never renamed into place.
    PartialFile,
}

#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// Where the store is, for messages (never contains credentials).
    fn location(&self) -> &str;

    /// Writes a small object atomically.
    async fn put(&self, key: &str, data: Bytes) -> Result<()>;

    /// Starts a streaming upload; nothing is visible until [`ObjectWriter::finish`] returns.
    async fn put_stream(&self, key: &str) -> Result<Box<dyn ObjectWriter>>;

    /// [`put_stream`](Self::put_stream) for an object the caller expects to be at most about `size_hint`
    /// bytes: a store that pays per request may hold that much to send the object in one request (S3: one
    /// PutObject instead of a multipart upload's four requests). A larger object is still stored whole.
    async fn put_stream_sized(&self, key: &str, size_hint: u64) -> Result<Box<dyn ObjectWriter>> {
        let _ = size_hint;
        self.put_stream(key).await
    }

    /// Opens an object for streaming; a missing key is [`Error::ObjectMissing`].
    async fn get(&self, key: &str) -> Result<ObjectReader>;

    /// Size and time of an object, or `None` when it does not exist.
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>>;

    /// Every visible object whose key starts with `prefix`, sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;

    /// Removes an object; removing a missing object succeeds.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Checks that the store exists and may be used (a bucket and its credentials), with a clear error if not.
    async fn check_access(&self) -> Result<()> {
        Ok(())
    }

    /// What writers killed before they could clean up leave behind in this store, if it can hold any: a
    /// local store's hidden partial files and empty directories, S3's open multipart uploads. `None` for a
    /// store that keeps nothing half-written (the memory store). A store that wraps another (fault injection,
    /// limits) forwards its inner store's.
    fn leftovers(&self) -> Option<&dyn Leftovers> {
        None
    }
}

/// The leftovers of killed writers in a store that can hold them, found and removed by `dr prune` once older
/// than its grace. A writer that is merely dropped removes its own (the contract suite checks that); only a
/// process killed mid-write leaves any.
#[async_trait]
pub trait Leftovers: Send + Sync {
    /// Uploads under the store's prefix that were started before `before` and never finished: S3's open
    /// multipart uploads, a local store's hidden partial files.
    async fn stale_uploads(&self, before: DateTime<Utc>) -> Result<Vec<PendingUpload>>;

    /// Aborts an open upload, deleting what it stored; one that is already gone counts as aborted.
    async fn abort_upload(&self, upload: &PendingUpload) -> Result<()>;

    /// Directories under `prefix` that hold no object (only, perhaps, other such directories) and were last
    /// changed before `before`, deepest first. A bucket has none (a key's "directories" exist only in keys).
    async fn empty_directories(&self, prefix: &str, before: DateTime<Utc>) -> Result<Vec<String>>;

    /// Removes one directory that [`Leftovers::empty_directories`] listed; one that is gone, or no longer
    /// empty, is left as it is.
    async fn remove_empty_directory(&self, key: &str) -> Result<()>;
}

/// One object being written, chunk by chunk.
#[async_trait]
pub trait ObjectWriter: Send {
    async fn write(&mut self, chunk: Bytes) -> Result<()>;

    /// Makes the object visible under its key, durably.
    async fn finish(self: Box<Self>) -> Result<()>;

    /// Discards everything written; the key is left as it was.
    async fn abort(self: Box<Self>) -> Result<()>;
}

/// Reads a whole (small) object into memory, refusing anything larger than `limit` bytes.
pub async fn get_bytes(store: &dyn Store, key: &str, limit: u64) -> Result<Vec<u8>> {
    let reader = store.get(key).await?;
    let mut buf = Vec::new();
    reader.take(limit + 1).read_to_end(&mut buf).await.map_err(|e| read_error(store.location(), key, e))?;
    if buf.len() as u64 > limit {
        return Err(Error::ObjectCorrupt {
            key: key.to_string(),
            reason: format!("larger than the {limit} bytes such an object can have"),
        });
    }
    Ok(buf)
}

/// Opens the store a repository configuration names: S3 for `s3://bucket/prefix`, a local directory otherwise,
/// under the configuration's bandwidth limits. Every command, job and drill opens its repository's store here,
/// so this is the one place the limits are applied. No request is made: a missing bucket or bad credentials
/// show at the first operation.
pub async fn open(repository: &RepositoryConfig) -> Result<Box<dyn Store>> {
    let mut limits = throttle::Limits::try_from(repository)?;
    let store: Box<dyn Store> = if is_s3(&repository.url) {
        // S3 paces its uploads on the wire itself; the wrapper below paces its downloads.
        let pacer = limits.upload.take().map(throttle::upload_bucket);
        Box::new(S3Store::paced(S3Options::try_from(repository)?, pacer).await)
    } else {
        refuse_s3_keys(repository)?;
        open_local(&repository.url)?
    };
    Ok(throttle::limit(store, &limits))
}

/// Checks `[repository]` without opening anything: the URL, the bandwidth limits, and for S3 every S3 setting
/// (by building the [`S3Options`]); a local repository must not set S3's keys.
pub fn validate(repository: &RepositoryConfig) -> Result<()> {
    throttle::Limits::try_from(repository)?;
    if is_s3(&repository.url) {
        return S3Options::try_from(repository).map(|_| ());
    }
    refuse_s3_keys(repository)?;
    local_path(&repository.url).map(|_| ())
}

fn is_s3(url: &str) -> bool {
    url.starts_with("s3://")
}

/// A local repository with an S3 setting is a mistake worth naming (a URL typed wrong, a key left over).
fn refuse_s3_keys(repository: &RepositoryConfig) -> Result<()> {
    let s3_only = [
        ("endpoint", repository.endpoint.is_some()),
        ("region", repository.region.is_some()),
        ("path_style", repository.path_style.is_some()),
        ("part_size", repository.part_size.is_some()),
        ("concurrency", repository.concurrency.is_some()),
    ];
    match s3_only.iter().find(|(_, set)| *set) {
        Some((key, _)) => Err(Error::ConfigInvalid(format!("[repository] {key} applies only to s3:// repositories"))),
        None => Ok(()),
    }
}

/// Opens a local store from its URL: `file:///abs/path` or a plain absolute path.
pub fn open_local(url: &str) -> Result<Box<dyn Store>> {
    Ok(Box::new(LocalStore::new(local_path(url)?)))
}

/// Checks a repository URL without opening anything (for values that come from the environment).
pub fn check_url(url: &str) -> Result<()> {
    if is_s3(url) {
        S3Options::from_url(url).map(|_| ()).map_err(|e| Error::ConfigInvalid(format!("url {url:?}: {e}")))
    } else {
        local_path(url).map(|_| ())
    }
}

/// The directory a local repository URL names. A `file://` URL is percent-decoded (RFC 8089: a space is
/// `%20`, a `%` is `%25`), and `file://localhost/p` is `file:///p`; a plain absolute path is taken as written.
pub fn local_path(url: &str) -> Result<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    let bad = |reason: &str| Error::RepositoryUrl { url: url.to_string(), reason: reason.to_string() };
    if let Some(rest) = url.strip_prefix("file://") {
        let rest = rest.strip_prefix("localhost").filter(|r| r.starts_with('/')).unwrap_or(rest);
        if !rest.starts_with('/') {
            return Err(bad(
                "a file:// URL needs an absolute path after it, with three slashes: file:///var/lib/dr/repo",
            ));
        }
        if let Some(at) = malformed_escape(rest) {
            let shown: String = rest[at..].chars().take(3).collect();
            return Err(bad(&format!(
                "{shown:?} is not a percent-encoded byte (a % starts two hex digits; a literal % is written %25)"
            )));
        }
        let bytes: Vec<u8> = percent_encoding::percent_decode_str(rest).collect();
        if bytes.contains(&0) {
            return Err(bad("%00 (a NUL byte) cannot be part of a path"));
        }
        return Ok(PathBuf::from(std::ffi::OsString::from_vec(bytes)));
    }
    if let Some((scheme, _)) = url.split_once("://") {
        return Err(bad(&format!("the {scheme}:// scheme is not supported: use file:// or s3://")));
    }
    if url.is_empty() || !url.starts_with('/') {
        return Err(bad("a local repository needs an absolute path, e.g. file:///var/lib/dr/repo"));
    }
    Ok(PathBuf::from(url))
}

/// The byte offset of the first `%` not followed by two hex digits.
fn malformed_escape(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    (0..bytes.len()).find(|&i| {
        bytes[i] == b'%'
            && !(i + 2 < bytes.len() && bytes[i + 1].is_ascii_hexdigit() && bytes[i + 2].is_ascii_hexdigit())
    })
}

/// Checks a key against the rules in the module documentation.
pub(crate) fn check_key(key: &str) -> Result<()> {
    let valid = !key.is_empty()
        && !key.starts_with('/')
        && key.split('/').all(|part| !part.is_empty() && !part.starts_with('.') && !part.contains('\0'));
    if valid { Ok(()) } else { Err(Error::Usage(format!("invalid object key {key:?}"))) }
}

/// A store's failure on one object, keeping its cause, with the general hint.
pub(crate) fn store_error(
    location: &str,
    operation: &'static str,
    key: &str,
    cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> Error {
    Error::Store { location: location.to_string(), operation, key: key.to_string(), source: cause.into(), hint: None }
}

/// A failed read of an object's stream. A store that found the cause itself (an S3 object replaced mid-read)
/// puts its own error inside the `io::Error`; its hint is kept, since it says more than the general one.
pub(crate) fn read_error(location: &str, key: &str, e: std::io::Error) -> Error {
    let hint = store_hint(&e);
    Error::Store { location: location.to_string(), operation: "read", key: key.to_string(), source: e.into(), hint }
}

/// The hint of a store's own error carried inside an `io::Error`, if that is what it carries.
fn store_hint(e: &std::io::Error) -> Option<&'static str> {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
        Some(Error::Store { hint, .. }) => *hint,
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        assert!(check_key("snapshots/a.json").is_ok());
        for bad in ["", "/abs", "a//b", "a/../b", "a/.hidden", "../x"] {
            assert!(check_key(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn validate_checks_the_url_and_every_s3_setting() {
        let repository = |url: &str| RepositoryConfig { url: url.to_string(), ..RepositoryConfig::default() };
        assert!(validate(&repository("/var/lib/dr/repo")).is_ok());
        assert!(validate(&repository("s3://dr-backups/site")).is_ok());
        assert!(matches!(validate(&repository("ftp://x/y")), Err(Error::RepositoryUrl { .. })));
        let err = validate(&repository("s3://Dr_Backups/site")).unwrap_err().to_string();
        assert!(err.contains("[repository] url") && err.contains("bucket name"), "{err}");
        let local_with_region = RepositoryConfig { region: Some("garage".into()), ..repository("/srv/repo") };
        let err = validate(&local_with_region).unwrap_err().to_string();
        assert_eq!(err, "invalid configuration: [repository] region applies only to s3:// repositories");

        let s3 = RepositoryConfig {
            endpoint: Some("http://127.0.0.1:3900/".into()),
            part_size: Some(bytesize::ByteSize::mib(5)),
            concurrency: Some(1),
            ..repository("s3://dr-backups/site")
        };
        let options = S3Options::try_from(&s3).unwrap();
        assert_eq!(options.endpoint.as_deref(), Some("http://127.0.0.1:3900"));
        assert!(options.path_style, "path-style by default with an endpoint");
        assert_eq!((options.part_size, options.concurrency), (5 << 20, 1));
        let too_small = RepositoryConfig { part_size: Some(bytesize::ByteSize::mib(4)), ..s3.clone() };
        assert!(S3Options::try_from(&too_small).unwrap_err().to_string().contains("part_size"));
        let too_many = RepositoryConfig { concurrency: Some(65), ..s3 };
        assert!(validate(&too_many).unwrap_err().to_string().contains("concurrency"));
    }

    #[test]
    fn urls_open_local_stores_or_say_why_not() {
        assert_eq!(open_local("file:///var/lib/dr").unwrap().location(), "/var/lib/dr");
        assert_eq!(open_local("/srv/repo").unwrap().location(), "/srv/repo");
        let err = open_local("ftp://x/y").unwrap_err().to_string();
        assert!(err.contains("ftp://"), "{err}");
        assert!(open_local("relative/repo").is_err());
    }

    #[test]
    fn file_urls_are_percent_decoded_and_bad_escapes_refused() {
        assert_eq!(local_path("file:///srv/dr%20repo").unwrap(), PathBuf::from("/srv/dr repo"));
        assert_eq!(local_path("file:///srv/100%25").unwrap(), PathBuf::from("/srv/100%"));
        assert_eq!(local_path("file://localhost/srv/repo").unwrap(), PathBuf::from("/srv/repo"));
        // A plain path is a path, not a URL: nothing in it is decoded.
        assert_eq!(local_path("/srv/dr%20repo").unwrap(), PathBuf::from("/srv/dr%20repo"));
        for (url, named) in [
            ("file:///srv/dr%zzrepo", "\"%zz\""),
            ("file:///srv/100%", "\"%\""),
            ("file:///srv/a%2", "\"%2\""),
            ("file:///srv/a%00b", "%00"),
            ("file://srv/repo", "three slashes"),
        ] {
            let err = local_path(url).unwrap_err().to_string();
            assert!(err.contains(url) && err.contains(named), "{url}: {err}");
        }
    }
}
