//! Streaming uploads: one PUT under a part (or under the size the caller announced), a multipart upload with
//! bounded parts in flight above.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use tokio::task::JoinSet;

use super::errors::Finding;
use super::{Inner, MAX_PART_SIZE, MAX_PARTS, content_md5};
use crate::error::{Error, Result};
use crate::files::ObjectInfo;
use crate::store::ObjectWriter;

/// An object's user metadata for a request, `None` when it has none.
pub(super) fn user_metadata(headers: &ObjectInfo) -> Option<std::collections::HashMap<String, String>> {
    (!headers.metadata.is_empty()).then(|| headers.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// One streaming upload: a single PUT if it stays under one part, a multipart upload otherwise.
pub(super) struct S3Writer {
    inner: Arc<Inner>,
    key: String,
    full: String,
    /// Bytes not yet sent: less than one part, or less than `whole_limit` while the object may still go whole.
    buffer: BytesMut,
    /// Up to this size the object is held and sent in one PutObject ([`S3Writer::whole_up_to`]).
    whole_limit: usize,
    upload_id: Option<String>,
    next_part: i32,
    /// Bytes handed to part uploads so far.
    sent: u64,
    /// Parts being uploaded; each hands its buffer back when done.
    in_flight: JoinSet<Result<(CompletedPart, Bytes)>>,
    /// Buffers of uploaded parts, for the next parts: a writer allocates at most `concurrency` (2 at least), so
    /// the allocator never churns through fresh part-sized blocks (glibc keeps freed ones, and memory grows).
    spare: Vec<BytesMut>,
    parts: Vec<CompletedPart>,
    /// Headers and user metadata the object is created with (a restore into a bucket source); none for the
    /// repository's own objects.
    headers: Option<Arc<ObjectInfo>>,
}

impl S3Writer {
    pub(super) fn new(inner: Arc<Inner>, key: String, full: String) -> S3Writer {
        S3Writer {
            inner,
            key,
            full,
            buffer: BytesMut::new(),
            whole_limit: 0,
            upload_id: None,
            next_part: 1,
            sent: 0,
            in_flight: JoinSet::new(),
            spare: Vec::new(),
            parts: Vec::new(),
            headers: None,
        }
    }

    /// Creates the object with these headers and user metadata.
    pub(super) fn with_headers(mut self, headers: ObjectInfo) -> S3Writer {
        self.headers = Some(Arc::new(headers));
        self
    }

    /// Holds an object of up to `size` bytes (at most [`MAX_PART_SIZE`], PutObject's limit) to send it in one
    /// PutObject; past that it becomes a multipart upload whose first parts are cut from what was held.
    pub(super) fn whole_up_to(mut self, size: u64) -> S3Writer {
        self.whole_limit = usize::try_from(size.min(MAX_PART_SIZE)).unwrap_or(usize::MAX);
        self
    }

    /// A failure of this upload that is not a request's (those are classified by [`Inner::retry`]).
    fn error(&self, finding: Finding) -> Error {
        self.inner.finding("write", &self.key, finding)
    }

    async fn start_multipart(&mut self) -> Result<String> {
        if let Some(id) = &self.upload_id {
            return Ok(id.clone());
        }
        let inner = &self.inner;
        let created = inner
            .retry("write", &self.key, || {
                let request = inner.client.create_multipart_upload().bucket(&inner.options.bucket).key(&self.full);
                match self.headers.as_deref() {
                    Some(headers) => request
                        .set_content_type(headers.content_type.clone())
                        .set_cache_control(headers.cache_control.clone())
                        .set_content_disposition(headers.content_disposition.clone())
                        .set_content_encoding(headers.content_encoding.clone())
                        .set_content_language(headers.content_language.clone())
                        .set_metadata(user_metadata(headers))
                        .send(),
                    None => request.send(),
                }
            })
            .await?;
        let id = created.upload_id().ok_or_else(|| self.error(Finding::NoUploadId))?;
        self.upload_id = Some(id.to_string());
        Ok(id.to_string())
    }

    /// Waits for one part in flight; its failure is the upload's.
    async fn collect_one(&mut self) -> Result<()> {
        match self.in_flight.join_next().await {
            Some(Ok(part)) => {
                let (part, data) = part?;
                self.parts.push(part);
                if let Ok(mut buffer) = data.try_into_mut() {
                    buffer.clear();
                    self.spare.push(buffer);
                }
                Ok(())
            }
            Some(Err(e)) => Err(self.error(Finding::PartStopped(e))),
            None => Ok(()),
        }
    }

    /// Adds bytes to the current part, sending each part as it fills.
    async fn append(&mut self, data: &[u8]) -> Result<()> {
        let part_size = self.inner.options.part_size as usize;
        let mut rest = data;
        while !rest.is_empty() {
            // Each part fills an allocation of exactly its size: a growing buffer would double its capacity, and
            // every part cut from it would pin the whole oversized allocation until uploaded.
            if self.buffer.capacity() == 0 {
                // The part being filled counts against `concurrency` too (but one part may always fill while
                // one uploads): when uploads keep up, one is in flight while the next fills; when they do
                // not, `concurrency` of them are in flight and the producer waits. Either way no more than
                // `concurrency` part buffers exist, which keeps a backup to S3 within dr's memory budget.
                while self.in_flight.len() + 1 > self.inner.options.concurrency.max(2) {
                    self.collect_one().await?;
                }
                self.buffer = self.spare.pop().unwrap_or_else(|| BytesMut::with_capacity(part_size));
            }
            let take = rest.len().min(part_size - self.buffer.len());
            self.buffer.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.buffer.len() == part_size {
                let part = std::mem::take(&mut self.buffer).freeze();
                self.send_part(part).await?;
            }
        }
        Ok(())
    }

    /// Sends one part, first waiting for a free slot: this wait is the backpressure on the producer.
    async fn send_part(&mut self, data: Bytes) -> Result<()> {
        if self.next_part as u64 > MAX_PARTS {
            return Err(self.error(Finding::TooManyParts { part_size: self.inner.options.part_size }));
        }
        let upload_id = self.start_multipart().await?;
        while self.in_flight.len() >= self.inner.options.concurrency {
            self.collect_one().await?;
        }
        let number = self.next_part;
        self.next_part += 1;
        self.sent += data.len() as u64;
        let inner = self.inner.clone();
        let (key, full) = (self.key.clone(), self.full.clone());
        let md5 = content_md5(&data);
        self.in_flight.spawn(async move {
            let uploaded = inner
                .retry("write", &key, || {
                    inner
                        .client
                        .upload_part()
                        .bucket(&inner.options.bucket)
                        .key(&full)
                        .upload_id(&upload_id)
                        .part_number(number)
                        .content_md5(&md5)
                        .body(super::paced::body(data.clone(), inner.upload_pacer.as_ref()))
                        .customize()
                        .disable_payload_signing()
                        .send()
                })
                .await?;
            let part =
                CompletedPart::builder().part_number(number).set_e_tag(uploaded.e_tag().map(str::to_string)).build();
            Ok((part, data))
        });
        Ok(())
    }

    async fn complete(&mut self) -> Result<()> {
        if self.upload_id.is_none() {
            let data = std::mem::take(&mut self.buffer).freeze();
            self.inner.put_object_with(&self.key, &self.full, data.clone(), self.headers.as_deref()).await?;
            if let Ok(buffer) = data.try_into_mut() {
                self.inner.keep_whole_buffer(buffer, self.whole_limit);
            }
            return Ok(());
        }
        if !self.buffer.is_empty() {
            let rest = self.buffer.split().freeze();
            self.send_part(rest).await?;
        }
        while !self.in_flight.is_empty() {
            self.collect_one().await?;
        }
        self.parts.sort_by_key(|p| p.part_number());
        let upload = CompletedMultipartUpload::builder().set_parts(Some(self.parts.clone())).build();
        let inner = &self.inner;
        let upload_id = self.upload_id.clone().unwrap_or_default();
        let mut attempts = 0;
        let completed = inner
            .retry("write", &self.key, || {
                attempts += 1;
                let retried = attempts > 1;
                let request = inner
                    .client
                    .complete_multipart_upload()
                    .bucket(&inner.options.bucket)
                    .key(&self.full)
                    .upload_id(&upload_id)
                    .multipart_upload(upload.clone())
                    .send();
                async move {
                    match request.await {
                        Ok(_) => Ok(true),
                        // An earlier attempt may have completed the upload and only its answer was lost.
                        Err(e) if retried && e.code() == Some("NoSuchUpload") => Ok(false),
                        Err(e) => Err(e),
                    }
                }
            })
            .await?;
        if !completed && !self.completed_earlier().await? {
            return Err(self.error(Finding::UploadVanished));
        }
        self.upload_id = None;
        Ok(())
    }

    /// Whether the object under the key is the one this upload's lost completion made: its size is the bytes
    /// sent, and its ETag is a multipart one with as many parts. (Each object key is written once, by one
    /// writer; the repository also checks every object's SHA-256 when it is read.)
    async fn completed_earlier(&self) -> Result<bool> {
        let inner = &self.inner;
        let head = inner
            .retry("stat", &self.key, || {
                inner.client.head_object().bucket(&inner.options.bucket).key(&self.full).send()
            })
            .await;
        let head = match head {
            Ok(head) => head,
            Err(Error::ObjectMissing { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        let suffix = format!("-{}", self.parts.len());
        let multipart = head.e_tag().is_some_and(|etag| etag.trim_matches('"').ends_with(&suffix));
        let complete = head.content_length().is_some_and(|length| length as u64 == self.sent);
        if multipart && complete {
            tracing::warn!(key = %self.key, "the answer to completing the upload was lost; the object is whole");
        }
        Ok(multipart && complete)
    }

    /// Stops the parts in flight and aborts the multipart upload, so no parts are left to pay for.
    async fn abort_upload(&mut self) -> Result<()> {
        self.in_flight.abort_all();
        while self.in_flight.join_next().await.is_some() {}
        let Some(upload_id) = self.upload_id.take() else { return Ok(()) };
        self.inner.abort_multipart(&self.key, &self.full, &upload_id).await
    }
}

impl Inner {
    /// A buffer for an object sent whole, of at least `size` bytes: a kept one, or a new one.
    fn whole_buffer(&self, size: usize) -> BytesMut {
        let mut kept = self.whole_buffers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match kept.iter().position(|buffer| buffer.capacity() >= size) {
            Some(i) => kept.swap_remove(i),
            None => BytesMut::with_capacity(size),
        }
    }

    /// Keeps a buffer whose object was sent, for the next: as many as uploads run at once, no more.
    fn keep_whole_buffer(&self, mut buffer: BytesMut, size: usize) {
        if size <= self.options.part_size as usize {
            return;
        }
        buffer.clear();
        let mut kept = self.whole_buffers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if kept.len() < self.options.concurrency {
            kept.push(buffer);
        }
    }
}

#[async_trait]
impl ObjectWriter for S3Writer {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        let part_size = self.inner.options.part_size as usize;
        if self.upload_id.is_none() && self.whole_limit > part_size {
            if self.buffer.len() + chunk.len() <= self.whole_limit {
                if self.buffer.capacity() == 0 {
                    self.buffer = self.inner.whole_buffer(self.whole_limit);
                }
                self.buffer.extend_from_slice(&chunk);
                return Ok(());
            }
            // Larger than announced: a multipart upload after all, its first parts cut from what is held.
            self.whole_limit = 0;
            let mut held = std::mem::take(&mut self.buffer);
            while held.len() >= part_size {
                let part = held.split_to(part_size).freeze();
                self.send_part(part).await?;
            }
            self.append(&held).await?;
        }
        self.append(&chunk).await
    }

    async fn finish(mut self: Box<Self>) -> Result<()> {
        match self.complete().await {
            Ok(()) => Ok(()),
            Err(e) => {
                if let Err(abort_error) = self.abort_upload().await {
                    tracing::warn!(key = %self.key, "could not abort the multipart upload: {abort_error}");
                }
                Err(e)
            }
        }
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        self.abort_upload().await
    }
}

impl Drop for S3Writer {
    /// Dropped mid-upload (the backup was cancelled): abort in the background if a runtime is still there.
    fn drop(&mut self) {
        self.in_flight.abort_all();
        let Some(upload_id) = self.upload_id.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (inner, full) = (self.inner.clone(), self.full.clone());
        runtime.spawn(async move {
            let _ = inner
                .client
                .abort_multipart_upload()
                .bucket(&inner.options.bucket)
                .key(&full)
                .upload_id(&upload_id)
                .send()
                .await;
        });
    }
}
