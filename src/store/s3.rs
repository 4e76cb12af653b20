//! A repository in an S3-compatible bucket (AWS S3, Cloudflare R2, Backblaze B2, Wasabi, Garage, MinIO, ...).
//!
//! - Uploads stream: `put_stream` cuts the incoming chunks into parts of exactly `part_size` bytes (R2 wants
//!   equal parts), uploads at most `concurrency` of them at once and makes the writer wait for a free slot, so
//!   memory stays within `part_size x (concurrency + 1)` whatever the object's size. An object smaller than
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

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{BehaviorVersion, Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::retry::{Attempt, RetryPolicy};
use super::{ObjectMeta, ObjectReader, ObjectWriter, PendingUpload, Store, UploadKind, check_key};
use crate::error::{Error, Result};

/// S3's smallest part (but the last), and its largest number of parts.
pub const MIN_PART_SIZE: u64 = 5 << 20;
pub const MAX_PART_SIZE: u64 = 5 << 30;
pub const MAX_PARTS: u64 = 10_000;
/// Defaults: 8 MiB x 10,000 parts allows objects of 78 GiB (compressed); 2 parts in flight keep the upload
/// buffers within 24 MiB and a whole backup to S3 near 55 MiB (docs/benchmarks.md: 3 in flight peaked at
/// 63.6 MiB, too close to the 64 MiB budget).
pub const DEFAULT_PART_SIZE: u64 = 8 << 20;
pub const DEFAULT_CONCURRENCY: usize = 2;
/// Downloaded pieces in flight between the download task and the reader.
const DOWNLOAD_CHANNEL: usize = 16;

/// Where the bucket is and how to talk to it.
#[derive(Debug, Clone, PartialEq)]
pub struct S3Options {
    pub bucket: String,
    /// Key prefix inside the bucket, without leading or trailing `/` (may be empty).
    pub prefix: String,
    /// A custom endpoint (`http://127.0.0.1:3900`); AWS itself when `None`.
    pub endpoint: Option<String>,
    /// The signing region; else the AWS chain's, else `us-east-1`.
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`) instead of virtual-hosted (`bucket.endpoint/key`).
    pub path_style: bool,
    pub part_size: u64,
    pub concurrency: usize,
    /// Keys per listing request (1000 is S3's maximum); smaller in tests, to exercise pagination.
    pub list_page_size: i32,
    pub retry: RetryPolicy,
    /// Credentials given directly (tests, embedding); `None` uses the standard AWS chain, as the CLI does.
    pub credentials: Option<StaticCredentials>,
}

/// An access key pair handed over in code; its `Debug` never shows the secret.
#[derive(Clone, PartialEq)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StaticCredentials({}, ***)", self.access_key_id)
    }
}

impl S3Options {
    /// Parses `s3://bucket/prefix` with the defaults for everything else.
    pub fn from_url(url: &str) -> std::result::Result<S3Options, String> {
        let rest = url.strip_prefix("s3://").ok_or("an S3 repository URL starts with s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !valid_bucket {
            return Err(format!(
                "{bucket:?} is not a bucket name (3-63 characters: lowercase letters, digits, '-' and '.')"
            ));
        }
        let prefix = prefix.trim_matches('/').to_string();
        if !prefix.is_empty() {
            check_key(&prefix).map_err(|_| format!("{prefix:?} is not a usable key prefix"))?;
        }
        Ok(S3Options {
            bucket: bucket.to_string(),
            prefix,
            endpoint: None,
            region: None,
            path_style: false,
            part_size: DEFAULT_PART_SIZE,
            concurrency: DEFAULT_CONCURRENCY,
            list_page_size: 1000,
            retry: RetryPolicy::default(),
            credentials: None,
        })
    }
}

#[derive(Debug, Clone)]
pub struct S3Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: Client,
    options: S3Options,
    location: String,
    /// Whether the endpoint ever answered in this process. Until it has, a connection that cannot be made
    /// (refused, no such host) is a wrong endpoint or a server that is down, and fails at once: retrying for
    /// a minute would only delay the error. Once it has, such a failure is a blip, retried like any other.
    reached: std::sync::atomic::AtomicBool,
}

impl S3Store {
    /// Builds the client from the AWS configuration chain; no request is made yet.
    pub async fn new(options: S3Options) -> S3Store {
        let region = match &options.region {
            Some(region) => Region::new(region.clone()),
            None => aws_config::meta::region::RegionProviderChain::default_provider()
                .or_else(Region::from_static("us-east-1"))
                .region()
                .await
                .unwrap_or_else(|| Region::from_static("us-east-1")),
        };
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).region(region);
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
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
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
        S3Store { inner: Arc::new(Inner { client, options, location, reached: Default::default() }) }
    }
}

impl Inner {
    fn full_key(&self, key: &str) -> Result<String> {
        check_key(key)?;
        Ok(if self.options.prefix.is_empty() { key.to_string() } else { format!("{}/{key}", self.options.prefix) })
    }

    fn relative_key<'k>(&self, full: &'k str) -> Option<&'k str> {
        if self.options.prefix.is_empty() {
            Some(full)
        } else {
            full.strip_prefix(&self.options.prefix)?.strip_prefix('/')
        }
    }

    /// Runs one S3 request under the retry policy, mapping its final error to dr's.
    async fn retry<T, E, F, Fut>(&self, operation: &'static str, key: &str, request: F) -> Result<T>
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
            .map_err(|e| self.error(operation, key, &e.error, !e.first_contact))
    }

    /// dr's error for a request's final failure; `retried`: whether the retry policy applied to it.
    fn error<E>(&self, operation: &'static str, key: &str, e: &SdkError<E, HttpResponse>, retried: bool) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let location = self.location.clone();
        let message = describe(e);
        let status = e.raw_response().map(|r| r.status().as_u16());
        if is_missing_credentials(e) {
            // The SDK's chain lists every provider it tried, on one line: useful when debugging, noise otherwise.
            tracing::debug!("no S3 credentials: {message}");
            return Error::NoStoreCredentials { location };
        }
        if let Some(reason) = connect_failure(e) {
            return Error::StoreUnreachable { location, endpoint: self.endpoint(), message: reason, retried };
        }
        match (e.code(), status) {
            (Some("NoSuchBucket"), _) => Error::NoSuchBucket { location, bucket: self.options.bucket.clone() },
            (Some("NoSuchKey"), _) => Error::ObjectMissing { key: key.to_string() },
            (Some("InvalidAccessKeyId" | "SignatureDoesNotMatch" | "InvalidToken" | "ExpiredToken"), _) => {
                Error::StoreCredentials { location, message }
            }
            // Some servers (Garage) answer a bad secret or an unknown access key with AccessDenied and say why
            // in the message ("Invalid signature", "No such key: GK...").
            (Some("AccessDenied"), _)
                if ["signature", "no such key"].iter().any(|s| message.to_lowercase().contains(s)) =>
            {
                Error::StoreCredentials { location, message }
            }
            (Some("AccessDenied" | "AllAccessDisabled"), _) | (None, Some(403)) => {
                Error::StoreAccessDenied { location, operation, key: key.to_string(), message }
            }
            // HEAD responses have no body, so only a generic code: a 404 on the bucket means there is none.
            (None | Some("NotFound"), Some(404)) if operation == "checking the bucket" => {
                Error::NoSuchBucket { location, bucket: self.options.bucket.clone() }
            }
            (None | Some("NotFound"), Some(404)) => Error::ObjectMissing { key: key.to_string() },
            _ if matches!(e, SdkError::DispatchFailure(_) | SdkError::TimeoutError(_)) => {
                Error::StoreUnreachable { location, endpoint: self.endpoint(), message, retried }
            }
            _ => Error::Store { location, operation, key: key.to_string(), message },
        }
    }

    fn endpoint(&self) -> String {
        self.options.endpoint.clone().unwrap_or_else(|| "AWS S3".to_string())
    }

    /// Aborts a multipart upload (retried); one that is already gone counts as aborted.
    async fn abort_multipart(&self, key: &str, full: &str, upload_id: &str) -> Result<()> {
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
    async fn put_object(&self, key: &str, full: &str, data: Bytes) -> Result<()> {
        let md5 = content_md5(&data);
        self.retry("write", key, || {
            self.client
                .put_object()
                .bucket(&self.options.bucket)
                .key(full)
                .content_md5(&md5)
                .body(ByteStream::from(data.clone()))
                .send()
        })
        .await
        .map(|_| ())
    }

    /// A GET from `offset`, checking that the object is still the one the download started on.
    async fn get_from(&self, full: &str, key: &str, offset: u64, etag: Option<&str>) -> Result<GetResponse> {
        let response = self
            .retry("read", key, || {
                let mut request = self.client.get_object().bucket(&self.options.bucket).key(full);
                if offset > 0 {
                    request = request.range(format!("bytes={offset}-"));
                }
                request.send()
            })
            .await?;
        let this_etag = response.e_tag().map(str::to_string);
        if let (Some(expected), Some(actual)) = (etag, this_etag.as_deref())
            && expected != actual
        {
            return Err(Error::Store {
                location: self.location.clone(),
                operation: "read",
                key: key.to_string(),
                message: "the object changed while it was being read".to_string(),
            });
        }
        Ok(GetResponse { body: response.body, etag: this_etag })
    }
}

/// An SDK error with its one-line description, for the retry log lines (its own Display says only
/// "service error" or "dispatch failure").
struct Described<E> {
    error: E,
    text: String,
    /// A connection that could not be made to an endpoint that never answered (so it was not retried).
    first_contact: bool,
}

impl<E> std::fmt::Display for Described<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// The base64 MD5 of a request body: S3 requires it on uploads into buckets with Object Lock, and every
/// S3-compatible service accepts it (unlike the newer checksum headers).
fn content_md5(data: &[u8]) -> String {
    use base64::Engine;
    use md5::Digest;
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(data))
}

struct GetResponse {
    body: ByteStream,
    etag: Option<String>,
}

/// How long one request may take: a minute, plus the time to send one part at 128 KiB/s, so a slow but
/// working uplink finishes its parts while a dead connection still fails in bounded time. (A download's body
/// streams after its request completed; stalled stream protection watches that.)
fn attempt_timeout(part_size: u64) -> Duration {
    Duration::from_secs(60) + Duration::from_secs(part_size / (128 << 10))
}

/// Whether the request never left because no credentials could be found (the SDK reports this as a failure
/// to dispatch, like an unreachable endpoint).
fn is_missing_credentials<E: std::error::Error + 'static>(e: &SdkError<E, HttpResponse>) -> bool {
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(inner) = cause {
        let text = inner.to_string();
        if text.contains("loading credentials") || text.contains("no credentials") {
            return true;
        }
        cause = inner.source();
    }
    false
}

/// Why a connection could not be made at all (refused, no such host, no route), when that is the failure:
/// the causes below the HTTP client's "connect" error, e.g. "tcp connect error: Connection refused (os error
/// 111)". A failure after connecting (a reset, a timeout waiting for the answer) is not one.
fn connect_failure<E: std::error::Error + 'static>(e: &SdkError<E, HttpResponse>) -> Option<String> {
    let SdkError::DispatchFailure(_) = e else { return None };
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(inner) = cause {
        if let Some(client) = inner.downcast_ref::<hyper_util::client::legacy::Error>() {
            if !client.is_connect() {
                return None;
            }
            let mut reasons: Vec<String> = Vec::new();
            let mut below = std::error::Error::source(client);
            while let Some(reason) = below {
                let text = reason.to_string();
                if !reasons.iter().any(|r| r.contains(&text)) {
                    reasons.push(text);
                }
                below = reason.source();
            }
            return Some(if reasons.is_empty() { client.to_string() } else { reasons.join(": ") });
        }
        cause = inner.source();
    }
    None
}

/// Whether another attempt may succeed.
fn is_transient<E: ProvideErrorMetadata + std::error::Error + 'static>(e: &SdkError<E, HttpResponse>) -> bool {
    if is_missing_credentials(e) {
        return false;
    }
    match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
        SdkError::ServiceError(_) => {
            let status = e.raw_response().map_or(0, |r| r.status().as_u16());
            status >= 500
                || status == 429
                || matches!(
                    e.code(),
                    Some("SlowDown" | "Throttling" | "ThrottlingException" | "RequestTimeout" | "InternalError")
                )
        }
        _ => false,
    }
}

/// An SDK error as one line: the server's code, message and status, or the chain of causes of a failure to
/// talk to it (the SDK's own Display says only "service error" or "dispatch failure").
fn describe<E>(e: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    if let SdkError::ServiceError(_) = e {
        let status = e.raw_response().map_or(0, |r| r.status().as_u16());
        return match (e.code(), e.message()) {
            (Some(code), Some(message)) => format!("{code}: {message} (HTTP {status})"),
            (Some(code), None) => format!("{code} (HTTP {status})"),
            _ => format!("HTTP {status}"),
        };
    }
    let mut text = String::new();
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(inner) = cause {
        let line = inner.to_string();
        if !text.contains(&line) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&line);
        }
        cause = inner.source();
    }
    let text = if text.is_empty() { e.to_string() } else { text };
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

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
        Ok(Box::new(S3Writer {
            inner: self.inner.clone(),
            key: key.to_string(),
            full,
            buffer: BytesMut::new(),
            upload_id: None,
            next_part: 1,
            sent: 0,
            in_flight: JoinSet::new(),
            spare: Vec::new(),
            parts: Vec::new(),
        }))
    }

    async fn get(&self, key: &str) -> Result<ObjectReader> {
        let inner = self.inner.clone();
        let full = inner.full_key(key)?;
        // The first request happens here, so a missing object is an error of `get` itself.
        let first = inner.get_from(&full, key, 0, None).await?;
        let (sender, receiver) = mpsc::channel(DOWNLOAD_CHANNEL);
        tokio::spawn(download(inner, key.to_string(), full, first, sender));
        let mut receiver = receiver;
        let stream = futures::stream::poll_fn(move |cx| receiver.poll_recv(cx));
        Ok(Box::pin(tokio_util::io::StreamReader::new(stream)))
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
        let mut token: Option<String> = None;
        loop {
            let page = inner
                .retry("list", prefix, || {
                    inner
                        .client
                        .list_objects_v2()
                        .bucket(&inner.options.bucket)
                        .prefix(&full_prefix)
                        .max_keys(inner.options.list_page_size)
                        .set_continuation_token(token.clone())
                        .send()
                })
                .await?;
            for object in page.contents() {
                let Some(key) = object.key().and_then(|k| inner.relative_key(k)) else { continue };
                found.push(ObjectMeta {
                    key: key.to_string(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                    modified: object.last_modified().and_then(to_chrono),
                });
            }
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_string()),
                _ => break,
            }
        }
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
            .retry("checking the bucket", bucket, || {
                inner.client.list_objects_v2().bucket(bucket).prefix(&inner.options.prefix).max_keys(1).send()
            })
            .await
            .map(|_| ())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let inner = &self.inner;
        let full = inner.full_key(key)?;
        let result = inner
            .retry("delete", key, || inner.client.delete_object().bucket(&inner.options.bucket).key(&full).send())
            .await;
        match result {
            Ok(_) | Err(Error::ObjectMissing { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

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
}

fn to_chrono(time: &aws_sdk_s3::primitives::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(time.secs(), time.subsec_nanos())
}

/// Feeds one object's bytes to the reader, resuming from the last byte received when the connection breaks.
async fn download(
    inner: Arc<Inner>,
    key: String,
    full: String,
    first: GetResponse,
    sender: mpsc::Sender<std::io::Result<Bytes>>,
) {
    let etag = first.etag.clone();
    let mut body = first.body;
    let mut offset: u64 = 0;
    let mut resumes = 0;
    loop {
        match body.try_next().await {
            Ok(Some(chunk)) => {
                offset += chunk.len() as u64;
                if sender.send(Ok(chunk)).await.is_err() {
                    return; // the reader is gone
                }
            }
            Ok(None) => return,
            Err(e) => {
                resumes += 1;
                if resumes > inner.options.retry.max_attempts {
                    let message = format!("reading {key}: the connection broke {resumes} times; last: {e}");
                    let _ = sender.send(Err(std::io::Error::other(message))).await;
                    return;
                }
                tracing::warn!(key = %key, offset, "download interrupted ({e}); resuming from byte {offset}");
                match inner.get_from(&full, &key, offset, etag.as_deref()).await {
                    Ok(next) => body = next.body,
                    Err(e) => {
                        let _ = sender.send(Err(std::io::Error::other(e.to_string()))).await;
                        return;
                    }
                }
            }
        }
    }
}

/// One streaming upload: a single PUT if it stays under one part, a multipart upload otherwise.
struct S3Writer {
    inner: Arc<Inner>,
    key: String,
    full: String,
    /// Bytes not yet sent: less than one part.
    buffer: BytesMut,
    upload_id: Option<String>,
    next_part: i32,
    /// Bytes handed to part uploads so far.
    sent: u64,
    /// Parts being uploaded; each hands its buffer back when done.
    in_flight: JoinSet<Result<(CompletedPart, Bytes)>>,
    /// Buffers of uploaded parts, for the next parts: a writer allocates at most `concurrency + 1` of them, so
    /// the allocator never churns through fresh part-sized blocks (glibc keeps freed ones, and memory grows).
    spare: Vec<BytesMut>,
    parts: Vec<CompletedPart>,
}

impl S3Writer {
    /// A failure of this upload that is not a request's (those are classified by [`Inner::retry`]).
    fn error(&self, message: String) -> Error {
        Error::Store { location: self.inner.location.clone(), operation: "write", key: self.key.clone(), message }
    }

    async fn start_multipart(&mut self) -> Result<String> {
        if let Some(id) = &self.upload_id {
            return Ok(id.clone());
        }
        let inner = &self.inner;
        let created = inner
            .retry("write", &self.key, || {
                inner.client.create_multipart_upload().bucket(&inner.options.bucket).key(&self.full).send()
            })
            .await?;
        let id = created
            .upload_id()
            .ok_or_else(|| self.error("the server started a multipart upload without an upload id".to_string()))?;
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
            Some(Err(e)) => Err(self.error(format!("a part upload stopped: {e}"))),
            None => Ok(()),
        }
    }

    /// Sends one part, first waiting for a free slot: this wait is the backpressure on the producer.
    async fn send_part(&mut self, data: Bytes) -> Result<()> {
        if self.next_part as u64 > MAX_PARTS {
            return Err(self.error(format!(
                "the object needs more than {MAX_PARTS} parts of {}: raise [repository] part_size",
                crate::units::bytes(self.inner.options.part_size)
            )));
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
                        .body(ByteStream::from(data.clone()))
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
            let data = self.buffer.split().freeze();
            return self.inner.put_object(&self.key, &self.full, data).await;
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
            return Err(
                self.error("the multipart upload disappeared before it was completed (NoSuchUpload)".to_string())
            );
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

#[async_trait]
impl ObjectWriter for S3Writer {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        let part_size = self.inner.options.part_size as usize;
        let mut rest = &chunk[..];
        while !rest.is_empty() {
            // Each part fills an allocation of exactly its size: a growing buffer would double its capacity, and
            // every part cut from it would pin the whole oversized allocation until uploaded.
            if self.buffer.capacity() == 0 {
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
