//! The [`Store`] operations of an [`S3Store`].

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::download::stream;
use super::errors::Subject;
use super::writer::S3Writer;
use super::{S3Store, to_chrono};
use crate::error::{Error, Result};
use crate::store::{Leftovers, ObjectMeta, ObjectReader, ObjectWriter, PendingUpload, Store, UploadKind};

#[async_trait]
impl Store for S3Store {
    fn location(&self) -> &str {
        &self.inner.location
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let full = self.inner.full_key(key)?;
        self.inner.put_object(key, &full, data).await
    }

    async fn put_stream(&self, key: &str) -> Result<Box<dyn ObjectWriter>> {
        let full = self.inner.full_key(key)?;
        Ok(Box::new(S3Writer::new(self.inner.clone(), key.to_string(), full)))
    }

    async fn put_stream_sized(&self, key: &str, size_hint: u64) -> Result<Box<dyn ObjectWriter>> {
        let full = self.inner.full_key(key)?;
        Ok(Box::new(S3Writer::new(self.inner.clone(), key.to_string(), full).whole_up_to(size_hint)))
    }

    async fn get(&self, key: &str) -> Result<ObjectReader> {
        let inner = self.inner.clone();
        let full = inner.full_key(key)?;
        // The first request happens here, so a missing object is an error of `get` itself.
        let first = inner.get_from(&full, key, 0, None).await?;
        Ok(stream(inner, key.to_string(), full, first))
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let inner = &self.inner;
        let full = inner.full_key(key)?;
        let result = inner
            .retry("stat", key, || inner.client.head_object().bucket(&inner.options.bucket).key(&full).send())
            .await;
        match result {
            Ok(head) => Ok(Some(ObjectMeta {
                key: key.to_string(),
                size: head.content_length().unwrap_or(0).max(0) as u64,
                modified: head.last_modified().and_then(to_chrono),
            })),
            Err(Error::ObjectMissing { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let inner = &self.inner;
        let full_prefix = if inner.options.prefix.is_empty() {
            prefix.to_string()
        } else {
            format!("{}/{prefix}", inner.options.prefix)
        };
        let mut found = Vec::new();
        inner
            .list_pages(prefix, &full_prefix, |object| {
                let Some(key) = object.key().and_then(|k| inner.relative_key(k)) else { return };
                found.push(ObjectMeta {
                    key: key.to_string(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                    modified: object.last_modified().and_then(to_chrono),
                });
            })
            .await?;
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }

    /// Checks up front that the bucket exists and these credentials may use it. A one-key listing rather than
    /// a HEAD: an error response to a HEAD has no body, so a refused signature, an unknown key and a missing
    /// permission would all be a bare 403; a GET's body says which.
    async fn check_access(&self) -> Result<()> {
        let inner = &self.inner;
        let bucket = &inner.options.bucket;
        inner
            .retry_on(Subject::Bucket, "checking the bucket", bucket, || {
                inner.client.list_objects_v2().bucket(bucket).prefix(&inner.options.prefix).max_keys(1).send()
            })
            .await
            .map(|_| ())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let full = self.inner.full_key(key)?;
        self.inner.delete_object(key, &full).await
    }

    fn leftovers(&self) -> Option<&dyn Leftovers> {
        Some(self)
    }
}

#[async_trait]
impl Leftovers for S3Store {
    /// ListMultipartUploads under the prefix, page by page (`list_page_size` uploads a page). Needs
    /// `s3:ListBucketMultipartUploads` on the bucket.
    async fn stale_uploads(&self, before: DateTime<Utc>) -> Result<Vec<PendingUpload>> {
        let inner = &self.inner;
        // With the trailing `/`, so that the prefix `site` does not take in `site2/...`.
        let prefix = if inner.options.prefix.is_empty() { String::new() } else { format!("{}/", inner.options.prefix) };
        let mut found = Vec::new();
        let mut markers: (Option<String>, Option<String>) = (None, None);
        loop {
            let page = inner
                .retry("list multipart uploads", &prefix, || {
                    inner
                        .client
                        .list_multipart_uploads()
                        .bucket(&inner.options.bucket)
                        .prefix(&prefix)
                        .max_uploads(inner.options.list_page_size)
                        .set_key_marker(markers.0.clone())
                        .set_upload_id_marker(markers.1.clone())
                        .send()
                })
                .await?;
            for upload in page.uploads() {
                let (Some(full), Some(upload_id)) = (upload.key(), upload.upload_id()) else { continue };
                let Some(key) = inner.relative_key(full) else { continue };
                let initiated = upload.initiated().and_then(to_chrono);
                // An upload of unknown age is left alone: it may be a backup's, running now.
                if initiated.is_some_and(|t| t < before) {
                    found.push(PendingUpload {
                        key: key.to_string(),
                        upload_id: upload_id.to_string(),
                        initiated,
                        kind: UploadKind::Multipart,
                    });
                }
            }
            let next = (page.next_key_marker().map(str::to_string), page.next_upload_id_marker().map(str::to_string));
            // A server that says "truncated" without moving the markers on would loop forever.
            if page.is_truncated() != Some(true) || next.0.is_none() || next == markers {
                break;
            }
            markers = next;
        }
        found.sort_by(|a, b| a.key.cmp(&b.key).then(a.initiated.cmp(&b.initiated)));
        Ok(found)
    }

    async fn abort_upload(&self, upload: &PendingUpload) -> Result<()> {
        let full = self.inner.full_key(&upload.key)?;
        self.inner.abort_multipart(&upload.key, &full, &upload.upload_id).await
    }

    /// A bucket has no directories: a key's `/`-separated parts exist only in the key.
    async fn empty_directories(&self, _prefix: &str, _before: DateTime<Utc>) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    async fn remove_empty_directory(&self, _key: &str) -> Result<()> {
        Ok(())
    }
}
