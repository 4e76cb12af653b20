//! What a bucket *source* needs beyond the [`crate::store::Store`] trait: listings with ETags, a GET of the
//! listed version with the object's headers, and uploads that give a restored object its headers back.
//!
//! The repository never needs these (its objects are dr's own, named once and checked by SHA-256), so they are
//! inherent methods of [`S3Store`] rather than part of the trait that every store implements.

use aws_sdk_s3::error::ProvideErrorMetadata;

use super::download::{GetResponse, stream};
use super::writer::S3Writer;
use super::{S3Store, to_chrono};
use crate::error::{Error, Result};
use crate::files::ObjectInfo;
use crate::store::{ObjectReader, ObjectWriter};

/// One object of a listing: its key below the store's prefix, and what tells a changed object from an
/// unchanged one without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    pub key: String,
    pub size: u64,
    pub etag: String,
    /// Seconds since the epoch and nanoseconds.
    pub modified: (i64, u32),
}

/// The answer to a GET of a listed version.
pub enum Version {
    /// The object is gone (deleted since it was listed).
    Gone,
    /// The object's bytes, streaming. `replaced`: it is not the listed version but the one that replaced it.
    Found { info: ObjectInfo, size: u64, reader: ObjectReader, replaced: bool },
}

impl std::fmt::Debug for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Version::Gone => f.write_str("Gone"),
            Version::Found { info, size, replaced, .. } => f
                .debug_struct("Found")
                .field("etag", &info.etag)
                .field("size", size)
                .field("replaced", replaced)
                .finish(),
        }
    }
}

/// One GET's answer.
enum Got {
    Gone,
    /// Not the version asked for (`If-Match` failed).
    Other,
    Found {
        info: ObjectInfo,
        size: u64,
        reader: ObjectReader,
    },
}

impl S3Store {
    /// Every object under the store's prefix, in the bucket's order (byte order of the keys). Keys that are
    /// not below the prefix as `prefix/...` are left out.
    pub async fn list_objects(&self) -> Result<Vec<ListedObject>> {
        let inner = &self.inner;
        let full_prefix =
            if inner.options.prefix.is_empty() { String::new() } else { format!("{}/", inner.options.prefix) };
        let mut found = Vec::new();
        inner
            .list_pages("", &full_prefix, |object| {
                let Some(key) = object.key().and_then(|k| inner.relative_key(k)) else { return };
                let modified = object.last_modified().and_then(to_chrono).unwrap_or_default();
                found.push(ListedObject {
                    key: key.to_string(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                    etag: object.e_tag().unwrap_or_default().to_string(),
                    modified: (modified.timestamp(), modified.timestamp_subsec_nanos()),
                });
            })
            .await?;
        Ok(found)
    }

    /// A listed key under the store's prefix. Not checked like the repository's own keys: a bucket source's
    /// keys are the site's (`photos/`, a folder object, ends with a `/`), and only come from a listing or a tree.
    fn source_key(&self, key: &str) -> String {
        let prefix = &self.inner.options.prefix;
        if prefix.is_empty() { key.to_string() } else { format!("{prefix}/{key}") }
    }

    /// Deletes a listed object (a restore with `--force` removing what the snapshot does not hold).
    pub async fn delete_object(&self, key: &str) -> Result<()> {
        self.inner.delete_object(key, &self.source_key(key)).await
    }

    /// The first key under the store's prefix, if any: whether a restore target is empty.
    pub async fn first_key(&self) -> Result<Option<String>> {
        let inner = &self.inner;
        let full_prefix =
            if inner.options.prefix.is_empty() { String::new() } else { format!("{}/", inner.options.prefix) };
        let page = inner
            .retry("list", "", || {
                inner.client.list_objects_v2().bucket(&inner.options.bucket).prefix(&full_prefix).max_keys(1).send()
            })
            .await?;
        Ok(page.contents().iter().find_map(|o| o.key().and_then(|k| inner.relative_key(k)).map(str::to_string)))
    }

    /// Reads the version of `key` whose ETag is `etag` (`If-Match`), streaming like [`crate::store::Store::get`]
    /// (resumed after a broken connection, refusing to splice two versions). An object replaced since it was
    /// listed is read as it is now, once: what the snapshot then holds is the newer version, whole.
    pub async fn get_version(&self, key: &str, etag: &str) -> Result<Version> {
        let (got, replaced) = match self.get_object(key, Some(etag)).await? {
            Got::Other => (self.get_object(key, None).await?, true),
            got => (got, false),
        };
        Ok(match got {
            Got::Found { info, size, reader } => Version::Found { info, size, reader, replaced },
            Got::Gone | Got::Other => Version::Gone,
        })
    }

    async fn get_object(&self, key: &str, etag: Option<&str>) -> Result<Got> {
        let inner = self.inner.clone();
        let full = self.source_key(key);
        let response = inner
            .retry("read", key, || {
                let request = inner
                    .client
                    .get_object()
                    .bucket(&inner.options.bucket)
                    .key(&full)
                    .set_if_match(etag.map(str::to_string));
                async move {
                    match request.send().await {
                        Ok(response) => Ok(Some(response)),
                        // 412: the object's ETag is no longer the listed one.
                        Err(e)
                            if e.code() == Some("PreconditionFailed")
                                || e.raw_response().is_some_and(|r| r.status().as_u16() == 412) =>
                        {
                            Ok(None)
                        }
                        Err(e) => Err(e),
                    }
                }
            })
            .await;
        let response = match response {
            Ok(Some(response)) => response,
            Ok(None) => return Ok(Got::Other),
            Err(Error::ObjectMissing { .. }) => return Ok(Got::Gone),
            Err(e) => return Err(e),
        };
        let found_etag = response.e_tag().unwrap_or_default().to_string();
        // A server that ignores If-Match answers with whatever is there now: the ETag tells.
        if etag.is_some_and(|etag| etag != found_etag) {
            return Ok(Got::Other);
        }
        let info = ObjectInfo {
            etag: found_etag.clone(),
            content_type: response.content_type().map(str::to_string),
            cache_control: response.cache_control().map(str::to_string),
            content_disposition: response.content_disposition().map(str::to_string),
            content_encoding: response.content_encoding().map(str::to_string),
            content_language: response.content_language().map(str::to_string),
            metadata: response
                .metadata()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
        };
        let size = response.content_length().unwrap_or(0).max(0) as u64;
        let first = GetResponse { body: response.body, etag: Some(found_etag) };
        Ok(Got::Found { info, size, reader: stream(inner, key.to_string(), full, first) })
    }

    /// A streaming upload of `key` that creates the object with `headers` (content type, cache control, user
    /// metadata, ...): an object of a bucket source put back.
    pub async fn put_stream_with(&self, key: &str, headers: ObjectInfo) -> Result<Box<dyn ObjectWriter>> {
        let full = self.source_key(key);
        Ok(Box::new(S3Writer::new(self.inner.clone(), key.to_string(), full).with_headers(headers)))
    }
}
