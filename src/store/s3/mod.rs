//! A repository in an S3-compatible bucket (AWS S3, Cloudflare R2, Backblaze B2, Wasabi, Garage, MinIO, ...).
//!
//! - Uploads stream: `put_stream` cuts the incoming chunks into parts of exactly `part_size` bytes (R2 wants
//!   equal parts), uploads at most `concurrency` of them at once and makes the writer wait for a free slot, so
//!   memory stays within `part_size x concurrency` (the part being filled counts; 2 at least) whatever the
//!   object's size. An object smaller than
//!   one part is a single PUT. Nothing is visible until CompleteMultipartUpload; a failed or dropped upload is
//!   aborted, so it leaves no parts behind to pay for.
//! - Downloads stream from a background task into a small channel, and resume after a broken connection with
//!   a ranged GET from the last byte received, refusing to splice two versions of an object (ETag check).
//! - Every request goes through one [`RetryPolicy`]: transient failures (5xx, throttling, timeouts, broken
//!   connections) are retried with backoff and logged; others fail at once with a message that says what to
//!   do (no such bucket, access denied, bad credentials, endpoint unreachable).
//!
//! Credentials come from the standard AWS chain (environment, profile, web identity, instance metadata) and
//! never appear in the store's location, messages or manifests.

mod download;
mod errors;
mod objects;
mod options;
mod paced;
mod store_impl;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{BehaviorVersion, Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::check_key;
use crate::error::{Error, Result};
use crate::retry::Attempt;
use errors::{Described, Subject, connect_failure, describe, is_transient};

pub use objects::{ListedObject, Version};
pub use options::{
    DEFAULT_CONCURRENCY, DEFAULT_PART_SIZE, MAX_PART_SIZE, MAX_PARTS, MIN_PART_SIZE, S3Options, StaticCredentials,
};

#[derive(Debug, Clone)]
pub struct S3Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(super) struct Inner {
    client: Client,
    options: S3Options,
    location: String,
    /// Whether the endpoint ever answered in this process. Until it has, a connection that cannot be made
    /// (refused, no such host) is a wrong endpoint or a server that is down, and fails at once: retrying for
    /// a minute would only delay the error. Once it has, such a failure is a blip, retried like any other.
    reached: std::sync::atomic::AtomicBool,
    /// Buffers of objects sent whole ([`writer::S3Writer::whole_up_to`]), kept for the next ones: glibc keeps
    /// freed blocks of that size in each thread's arena, and a fresh 16 MiB buffer per pack had doubled a
    /// backup's peak RSS (measured: 121 MiB against 67 MiB with the blocks handed back to the system).
    whole_buffers: std::sync::Mutex<Vec<bytes::BytesMut>>,
    /// The upload limit, applied to request bodies as they are sent ([`paced`]).
    upload_pacer: Option<Arc<crate::store::throttle::TokenBucket>>,
}

impl S3Store {
    /// Builds the client from the AWS configuration chain; no request is made yet.
    pub async fn new(options: S3Options) -> S3Store {
        S3Store::paced(options, None).await
    }

    /// [`S3Store::new`], its uploads' bodies leaving no faster than `upload_pacer` allows (`[repository]
    /// limit_upload`): paced on the wire, where a pace of the bytes handed to the store would let each full
    /// part go at the link's speed.
    pub async fn paced(options: S3Options, upload_pacer: Option<Arc<crate::store::throttle::TokenBucket>>) -> S3Store {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(profile) = &options.profile {
            // The profile's key and nothing else: the chain would take AWS_ACCESS_KEY_ID first, which on a host
            // that also reaches the repository is the repository's key, not the source's.
            loader = loader.profile_name(profile).credentials_provider(
                aws_config::profile::ProfileFileCredentialsProvider::builder().profile_name(profile).build(),
            );
        }
        let region = match (&options.region, &options.profile) {
            (Some(region), _) => Some(Region::new(region.clone())),
            // The profile's own region, else the environment's, found by the loader.
            (None, Some(_)) => None,
            (None, None) => Some(
                aws_config::meta::region::RegionProviderChain::default_provider()
                    .or_else(Region::from_static("us-east-1"))
                    .region()
                    .await
                    .unwrap_or_else(|| Region::from_static("us-east-1")),
            ),
        };
        if let Some(region) = region {
            loader = loader.region(region);
        }
        if let Some(credentials) = &options.credentials {
            loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                &credentials.access_key_id,
                &credentials.secret_access_key,
                None,
                None,
                "dr",
            ));
        }
        let shared = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared);
        if shared.region().is_none() {
            builder = builder.region(Region::from_static("us-east-1"));
        }
        let mut builder = builder
            .force_path_style(options.path_style)
            // dr retries itself, with logging and resumable downloads.
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
            .timeout_config(
                aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .operation_attempt_timeout(attempt_timeout(options.part_size))
                    .build(),
            )
            // A download whose body stops flowing fails after the grace period, and is resumed.
            .stalled_stream_protection(
                aws_sdk_s3::config::StalledStreamProtectionConfig::enabled()
                    .grace_period(Duration::from_secs(30))
                    .build(),
            )
            // Many S3-compatible servers reject the newer default checksum headers; dr hashes every object
            // end to end itself, and SigV4 covers each request's payload.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(endpoint) = &options.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        let location = match &options.endpoint {
            Some(endpoint) => format!("s3://{}/{} at {endpoint}", options.bucket, options.prefix),
            None => format!("s3://{}/{}", options.bucket, options.prefix),
        };
        let client = Client::from_conf(builder.build());
        S3Store {
            inner: Arc::new(Inner {
                client,
                options,
                location,
                reached: Default::default(),
                whole_buffers: Default::default(),
                upload_pacer,
            }),
        }
    }
}

impl Inner {
    pub(super) fn full_key(&self, key: &str) -> Result<String> {
        check_key(key)?;
        Ok(if self.options.prefix.is_empty() { key.to_string() } else { format!("{}/{key}", self.options.prefix) })
    }

    pub(super) fn relative_key<'k>(&self, full: &'k str) -> Option<&'k str> {
        if self.options.prefix.is_empty() {
            Some(full)
        } else {
            full.strip_prefix(&self.options.prefix)?.strip_prefix('/')
        }
    }

    /// Runs one S3 request on an object under the retry policy, mapping its final error to dr's.
    pub(super) async fn retry<T, E, F, Fut>(&self, operation: &'static str, key: &str, request: F) -> Result<T>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, SdkError<E, HttpResponse>>>,
    {
        self.retry_on(Subject::Object, operation, key, request).await
    }

    /// Runs one S3 request under the retry policy; `subject` is what a bare 404 means is missing.
    async fn retry_on<T, E, F, Fut>(
        &self,
        subject: Subject,
        operation: &'static str,
        key: &str,
        request: F,
    ) -> Result<T>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, SdkError<E, HttpResponse>>>,
    {
        use std::sync::atomic::Ordering;
        let mut request = request;
        let what = format!("{operation} {key}");
        let reached = &self.reached;
        self.options
            .retry
            .run(&what, || {
                let attempt = request();
                async move {
                    let answered = |answered: bool| {
                        if answered {
                            reached.store(true, Ordering::Relaxed);
                        }
                    };
                    attempt.await.inspect(|_| answered(true)).map_err(|e| {
                        answered(e.raw_response().is_some());
                        let first_contact = !reached.load(Ordering::Relaxed) && connect_failure(&e).is_some();
                        let transient = !first_contact && is_transient(&e);
                        Attempt { error: Described { text: describe(&e), error: e, first_contact }, transient }
                    })
                }
            })
            .await
            .map_err(|e| self.error(subject, operation, key, e.error, !e.first_contact))
    }

    /// Every object under `full_prefix`, handed to `each` a page at a time (ListObjectsV2 under the retry
    /// policy); `what` names the listing in messages.
    pub(super) async fn list_pages(
        &self,
        what: &str,
        full_prefix: &str,
        mut each: impl FnMut(&aws_sdk_s3::types::Object),
    ) -> Result<()> {
        let mut token: Option<String> = None;
        loop {
            let page = self
                .retry("list", what, || {
                    self.client
                        .list_objects_v2()
                        .bucket(&self.options.bucket)
                        .prefix(full_prefix)
                        .max_keys(self.options.list_page_size)
                        .set_continuation_token(token.clone())
                        .send()
                })
                .await?;
            page.contents().iter().for_each(&mut each);
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_string()),
                _ => return Ok(()),
            }
        }
    }

    /// Deletes the object at `full` (retried); one that is already gone counts as deleted.
    pub(super) async fn delete_object(&self, key: &str, full: &str) -> Result<()> {
        let result = self
            .retry("delete", key, || self.client.delete_object().bucket(&self.options.bucket).key(full).send())
            .await;
        match result {
            Ok(_) | Err(Error::ObjectMissing { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Aborts a multipart upload (retried); one that is already gone counts as aborted.
    pub(super) async fn abort_multipart(&self, key: &str, full: &str, upload_id: &str) -> Result<()> {
        let result = self
            .retry("abort", key, || {
                let request = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.options.bucket)
                    .key(full)
                    .upload_id(upload_id)
                    .send();
                async move {
                    match request.await {
                        // Already gone (aborted by a lifecycle rule, or by an earlier attempt whose answer was lost).
                        Err(e) if e.code() == Some("NoSuchUpload") => Ok(()),
                        other => other.map(|_| ()),
                    }
                }
            })
            .await;
        match result {
            Ok(()) | Err(Error::ObjectMissing { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// One whole object in a single PUT (small objects, and streams that stayed under one part).
    pub(super) async fn put_object(&self, key: &str, full: &str, data: Bytes) -> Result<()> {
        self.put_object_with(key, full, data, None).await
    }

    /// [`Inner::put_object`], with the headers and user metadata of a restored object.
    pub(super) async fn put_object_with(
        &self,
        key: &str,
        full: &str,
        data: Bytes,
        headers: Option<&crate::files::ObjectInfo>,
    ) -> Result<()> {
        let md5 = content_md5(&data);
        self.retry("write", key, || {
            let mut request = self
                .client
                .put_object()
                .bucket(&self.options.bucket)
                .key(full)
                .content_md5(&md5)
                .body(paced::body(data.clone(), self.upload_pacer.as_ref()));
            if let Some(headers) = headers {
                request = request
                    .set_content_type(headers.content_type.clone())
                    .set_cache_control(headers.cache_control.clone())
                    .set_content_disposition(headers.content_disposition.clone())
                    .set_content_encoding(headers.content_encoding.clone())
                    .set_content_language(headers.content_language.clone())
                    .set_metadata(writer::user_metadata(headers));
            }
            request.customize().disable_payload_signing().send()
        })
        .await
        .map(|_| ())
    }
}

/// The base64 MD5 of a request body: S3 requires it on uploads into buckets with Object Lock, and every
/// S3-compatible service accepts it (unlike the newer checksum headers).
///
/// It is also what lets the server check an upload's body, so the body is not hashed a second time for the
/// signature (`UNSIGNED-PAYLOAD`, as AWS's own SDKs do over HTTPS): the signature covers the Content-MD5
/// header, and the bytes are age-encrypted and their SHA-256 is in the manifest. On the benchmark machine the
/// second pass, by dr and again by the server, cost 0.15-0.3 CPU-seconds per 140 MB uploaded.
pub(super) fn content_md5(data: &[u8]) -> String {
    use base64::Engine;
    use md5::Digest;
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(data))
}

/// How long one request may take: a minute, plus the time to send one part at 128 KiB/s, so a slow but
/// working uplink finishes its parts while a dead connection still fails in bounded time. (A download's body
/// streams after its request completed; stalled stream protection watches that.)
fn attempt_timeout(part_size: u64) -> Duration {
    Duration::from_secs(60) + Duration::from_secs(part_size / (128 << 10))
}

pub(super) fn to_chrono(time: &aws_sdk_s3::primitives::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(time.secs(), time.subsec_nanos())
}
