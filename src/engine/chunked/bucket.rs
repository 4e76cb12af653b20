//! A bucket as a chunked source's origin: the listing (made before the backup's threads start) is the walk,
//! and each changed object is read with a GET of its listed version.
//!
//! Unchanged objects are never downloaded: the files cache holds each object's size, time, ETag, metadata and
//! chunk ids from the last snapshot, and the walk's merge-join skips every object whose listing matches.
//! Objects are read by as many threads as the source's `concurrency` (GETs wait on the network, not the CPU);
//! each streams through the chunker, whose window holds the object (a photo's few MB) or, for one larger than
//! two maximum chunks, those 16 MiB: memory is bounded by `concurrency`, whatever the bucket's size.

use std::sync::Mutex;

use tokio::runtime::Handle;

use super::origin::{Consume, Contents, Origin};
use crate::chunks::ChunkerError;
use crate::config::FilesSource;
use crate::error::{Error, Failure, Result};
use crate::files::WalkItem;
use crate::store::Store;
use crate::store::s3::{S3Options, S3Store, Version};

/// Objects downloaded at once when the source does not say.
pub(crate) const DEFAULT_CONCURRENCY: usize = 8;
/// Reads of one object, counting the first: a read that broke after the download's own resumes is started
/// over (its chunks are content-addressed, so nothing is stored twice).
const READ_ATTEMPTS: u32 = 3;

pub(crate) struct BucketOrigin {
    pub name: String,
    /// `s3://bucket/prefix`.
    pub url: String,
    pub store: S3Store,
    /// The walk, made from the listing; taken by [`Origin::entries`].
    pub entries: Mutex<Vec<WalkItem>>,
    pub readers: usize,
    pub runtime: Handle,
}

impl Origin for BucketOrigin {
    /// The bucket and prefix without the endpoint: a proxy or an endpoint spelled another way is the same
    /// bucket, and the cache compares each object's ETag anyway.
    fn root(&self) -> String {
        self.url.clone()
    }

    /// One object per job: each GET waits on the network, and the readers must wait side by side.
    fn files_per_job(&self) -> Option<usize> {
        Some(1)
    }

    fn entries(&self) -> Box<dyn Iterator<Item = Result<WalkItem>> + '_> {
        let entries = self.entries.lock().map(|mut e| std::mem::take(&mut *e)).unwrap_or_default();
        Box::new(entries.into_iter().map(Ok))
    }

    fn readers(&self) -> usize {
        self.readers
    }

    fn read(&self, path: &[u8], etag: Option<&str>, consume: &mut Consume<'_>) -> Result<Contents> {
        let key = String::from_utf8_lossy(path);
        let etag = etag.unwrap_or_default();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let version =
                self.runtime.block_on(self.store.get_version(&key, etag)).map_err(|e| source_error(&self.name, e))?;
            let Version::Found { info, size, reader, replaced } = version else {
                return Ok(Contents::Vanished);
            };
            let mut reader = tokio_util::io::SyncIoBridge::new_with_handle(reader, self.runtime.clone());
            let failure = match consume(&mut reader, size) {
                Ok(read) if read == size => {
                    return Ok(Contents::Read { read, size, change: None, object: Some(info), replaced });
                }
                Ok(read) => format!("the download ended after {read} of {size} bytes"),
                Err(ChunkerError::Read(e)) => e.to_string(),
                Err(ChunkerError::Consumer(e)) => return Err(e),
            };
            if attempt >= READ_ATTEMPTS {
                return Err(crate::files::backup_error(
                    &self.name,
                    format!("reading {key} from {}: {failure} ({attempt} attempts)", self.store.location()),
                    std::io::Error::other(failure),
                ));
            }
            tracing::warn!(source = %self.name, key = %key, "reading the object again: {failure}");
        }
    }
}

/// The source's bucket, with its own endpoint, region and profile (checked by `files::validate`).
pub(crate) async fn open(source: &FilesSource) -> Result<S3Store> {
    Ok(S3Store::new(S3Options::try_from(source)?).await)
}

/// Lists one key of the source's bucket with its own credentials, as a backup does before it starts (and
/// `dr check`): a refusal is the source's error, naming the bucket.
pub(crate) async fn check_access(source: &FilesSource) -> Result<S3Store> {
    let store = open(source).await?;
    store.check_access().await.map_err(|e| source_error(&source.name, e))?;
    Ok(store)
}

/// A failure of the source bucket, said as the source's (the store's own messages speak of the repository),
/// with what to do about it.
pub(crate) fn source_error(source_name: &str, e: Error) -> Error {
    bucket_error(source_name, e, false)
}

/// A failure of a source's bucket; `writing`: a restore into it.
pub(crate) fn bucket_error(source_name: &str, e: Error, writing: bool) -> Error {
    let denied = if writing {
        "a restore into a bucket needs s3:ListBucket on the bucket and s3:PutObject on its objects (and \
         s3:DeleteObject with --force, s3:AbortMultipartUpload for large objects): grant them to the credentials \
         of the source's `profile`, or restore into a directory with --into NAME=DIRECTORY"
    } else {
        "a bucket source needs read access only: grant its credentials s3:ListBucket on the bucket and \
         s3:GetObject on its objects (docs/s3.md, \"A bucket as a files source\"), or fix its `profile`"
    };
    let (text, hint) = match &e {
        Error::StoreAccessDenied { location, operation, key, source } => {
            (format!("access denied by {location} ({operation} {key}): {source}"), denied)
        }
        Error::NoSuchBucket { location, bucket, .. } => (
            format!("no bucket {bucket:?} at {location}"),
            "fix the bucket name in the source's `path` (s3://bucket/prefix), or its `endpoint`",
        ),
        Error::StoreCredentials { location, source } => (
            format!("{location} refused the credentials: {source}"),
            "check the credentials of the source's `profile` (or of the AWS chain when it has none) and its `region`",
        ),
        Error::NoStoreCredentials { location, .. } => (
            format!("no S3 credentials found for {location}"),
            "set the source's `profile` to a profile of the AWS shared credentials file (~/.aws/credentials, or \
             AWS_SHARED_CREDENTIALS_FILE) that holds the source's read-only key",
        ),
        Error::StoreUnreachable { location, endpoint, source, .. } => (
            format!("cannot reach {endpoint} ({location}): {source}"),
            "check the source's `endpoint` (is the server running, and listening there?), DNS and the network path",
        ),
        Error::Store { location, operation, key, source, .. } => (
            format!("{location}: {operation} {key}: {source}"),
            "see the server's message; the source bucket answered it, not the repository",
        ),
        _ => return e,
    };
    Error::Files { source_name: source_name.to_string(), failure: Failure::new(text, e), hint: hint.to_string() }
}
