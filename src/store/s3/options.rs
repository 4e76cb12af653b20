//! Where the bucket is and how to talk to it: `s3://bucket/prefix` and the settings around it.

use super::super::check_key;
use crate::config::{FilesSource, RepositoryConfig};
use crate::error::{Error, Result};
use crate::retry::RetryPolicy;

/// S3's smallest part (but the last), and its largest number of parts.
pub const MIN_PART_SIZE: u64 = 5 << 20;
pub const MAX_PART_SIZE: u64 = 5 << 30;
pub const MAX_PARTS: u64 = 10_000;
/// Defaults: 8 MiB x 10,000 parts allows objects of 78 GiB (compressed); 2 parts in flight keep the upload
/// buffers within 24 MiB and a whole backup to S3 near 55 MiB (docs/benchmarks.md: 3 in flight peaked at
/// 63.6 MiB, too close to the 64 MiB budget).
pub const DEFAULT_PART_SIZE: u64 = 8 << 20;
pub const DEFAULT_CONCURRENCY: usize = 2;

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
    /// The AWS profile whose credentials (and region, unless `region` is set) the chain uses; `None`: the
    /// chain's own choice (`AWS_PROFILE`, else `default`).
    pub profile: Option<String>,
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
            profile: None,
        })
    }
}

impl S3Options {
    /// A custom endpoint (checked: http or https) and the addressing, path-style by default with one.
    fn set_endpoint(&mut self, endpoint: &Option<String>, path_style: Option<bool>) -> std::result::Result<(), String> {
        if let Some(endpoint) = endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(format!("endpoint {endpoint:?} must start with http:// or https://"));
            }
            self.endpoint = Some(endpoint.trim_end_matches('/').to_string());
        }
        self.path_style = path_style.unwrap_or(endpoint.is_some());
        Ok(())
    }
}

/// The `[repository]` section of an `s3://` repository, checked: the URL, the endpoint's scheme, the part size
/// (S3's limits) and the concurrency.
impl TryFrom<&RepositoryConfig> for S3Options {
    type Error = Error;

    fn try_from(repository: &RepositoryConfig) -> Result<S3Options> {
        let invalid = |message: String| Error::ConfigInvalid(format!("[repository] {message}"));
        let mut options = S3Options::from_url(&repository.url).map_err(|e| invalid(format!("url: {e}")))?;
        options.set_endpoint(&repository.endpoint, repository.path_style).map_err(invalid)?;
        options.region = repository.region.clone();
        if let Some(size) = repository.part_size {
            if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&size.as_u64()) {
                return Err(invalid(format!("part_size = {size} must be between 5 MiB and 5 GiB")));
            }
            options.part_size = size.as_u64();
        }
        if let Some(concurrency) = repository.concurrency {
            if !(1..=64).contains(&concurrency) {
                return Err(invalid(format!("concurrency = {concurrency} must be between 1 and 64")));
            }
            options.concurrency = concurrency;
        }
        Ok(options)
    }
}

/// A bucket files source (`path = "s3://bucket/prefix"`), checked: its own endpoint, region, profile and
/// addressing, never the repository's.
impl TryFrom<&FilesSource> for S3Options {
    type Error = Error;

    fn try_from(source: &FilesSource) -> Result<S3Options> {
        let invalid = |message: String| Error::ConfigInvalid(format!("files source {:?}: {message}", source.name));
        let url = source.bucket_url().ok_or_else(|| invalid("path is not an s3:// URL".to_string()))?;
        let mut options = S3Options::from_url(url).map_err(|e| invalid(format!("path: {e}")))?;
        options.set_endpoint(&source.endpoint, source.path_style).map_err(invalid)?;
        options.region = source.region.clone();
        if let Some(profile) = &source.profile {
            if profile.is_empty() {
                return Err(invalid("profile must not be empty".to_string()));
            }
            options.profile = Some(profile.clone());
        }
        Ok(options)
    }
}
