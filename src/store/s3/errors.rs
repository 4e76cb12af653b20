//! S3 failures as dr's errors: which are worth another attempt, and what each final one means to the user.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use super::{Inner, MAX_PARTS};
use crate::error::Error;

/// An S3 request's final failure: its one-line description (the SDK's own Display says only "service error"
/// or "dispatch failure"), with the SDK's error kept whole as the cause.
#[derive(Debug)]
pub(super) struct RequestFailure {
    text: String,
    sdk: Box<dyn std::error::Error + Send + Sync>,
}

impl RequestFailure {
    fn boxed<E>(text: String, sdk: SdkError<E, HttpResponse>) -> Box<dyn std::error::Error + Send + Sync>
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        Box::new(RequestFailure { text, sdk: Box::new(sdk) })
    }
}

impl std::fmt::Display for RequestFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for RequestFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.sdk.as_ref())
    }
}

/// What the S3 store found wrong itself, beyond any one request's failure.
#[derive(Debug, thiserror::Error)]
pub(super) enum Finding {
    #[error("the object changed while it was being read")]
    ObjectChanged,
    #[error("the object needs more than {MAX_PARTS} parts of {}: raise [repository] part_size", crate::units::bytes(*.part_size))]
    TooManyParts { part_size: u64 },
    #[error("the server started a multipart upload without an upload id")]
    NoUploadId,
    #[error("the multipart upload disappeared before it was completed (NoSuchUpload)")]
    UploadVanished,
    #[error("a part upload stopped: {0}")]
    PartStopped(#[source] tokio::task::JoinError),
}

impl Finding {
    /// What to do, when the general advice (reachable, writable, free space) does not fit.
    fn hint(&self) -> Option<&'static str> {
        match self {
            Finding::ObjectChanged => Some(
                "another process replaced the object while dr read it (each object is written once: is a second \
                 repository writing to the same bucket and prefix?); run the command again",
            ),
            Finding::TooManyParts { .. } => {
                Some("raise [repository] part_size so that the largest object fits in 10,000 parts")
            }
            Finding::NoUploadId => Some("the S3 server is not S3-compatible enough for multipart uploads"),
            Finding::UploadVanished => Some(
                "something aborted the upload while dr wrote it (a lifecycle rule that aborts incomplete uploads \
                 too early?); run the command again",
            ),
            Finding::PartStopped(_) => None,
        }
    }
}

/// What a request is about, so what a bare 404 (no error code) says is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Subject {
    /// An object: a 404 means the object does not exist.
    Object,
    /// The bucket itself (the access check): a 404 means there is no such bucket.
    Bucket,
}

impl Inner {
    /// dr's error for a request's final failure; `retried`: whether the retry policy applied to it.
    pub(super) fn error<E>(
        &self,
        subject: Subject,
        operation: &'static str,
        key: &str,
        e: SdkError<E, HttpResponse>,
        retried: bool,
    ) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let location = self.location.clone();
        let message = describe(&e);
        let status = e.raw_response().map(|r| r.status().as_u16());
        let code = e.code().map(str::to_string);
        if is_missing_credentials(&e) {
            // The SDK's chain lists every provider it tried, on one line: useful when debugging, noise otherwise.
            tracing::debug!("no S3 credentials: {message}");
            return Error::NoStoreCredentials { location, source: RequestFailure::boxed(message, e) };
        }
        if let Some(reason) = connect_failure(&e) {
            let source = RequestFailure::boxed(reason, e);
            return Error::StoreUnreachable { location, endpoint: self.endpoint(), source, retried };
        }
        let unreachable = matches!(e, SdkError::DispatchFailure(_) | SdkError::TimeoutError(_));
        // Some servers (Garage) answer a bad secret or an unknown access key with AccessDenied and say why in
        // the message ("Invalid signature", "No such key: GK...").
        let refused_key = ["signature", "no such key"].iter().any(|s| message.to_lowercase().contains(s));
        let source = RequestFailure::boxed(message, e);
        match (code.as_deref(), status) {
            (Some("NoSuchBucket"), _) => Error::NoSuchBucket { location, bucket: self.options.bucket.clone(), source },
            (Some("NoSuchKey"), _) => Error::ObjectMissing { key: key.to_string() },
            (Some("InvalidAccessKeyId" | "SignatureDoesNotMatch" | "InvalidToken" | "ExpiredToken"), _) => {
                Error::StoreCredentials { location, source }
            }
            (Some("AccessDenied"), _) if refused_key => Error::StoreCredentials { location, source },
            (Some("AccessDenied" | "AllAccessDisabled"), _) | (None, Some(403)) => {
                Error::StoreAccessDenied { location, operation, key: key.to_string(), source }
            }
            // HEAD responses have no body, so only a generic code: what is missing depends on what was asked.
            (None | Some("NotFound"), Some(404)) => match subject {
                Subject::Object => Error::ObjectMissing { key: key.to_string() },
                Subject::Bucket => Error::NoSuchBucket { location, bucket: self.options.bucket.clone(), source },
            },
            _ if unreachable => Error::StoreUnreachable { location, endpoint: self.endpoint(), source, retried },
            _ => Error::Store { location, operation, key: key.to_string(), source, hint: None },
        }
    }

    /// The error for a failure this store found itself (not a request's: those go through [`Inner::error`]),
    /// with the hint that fits it.
    pub(super) fn finding(&self, operation: &'static str, key: &str, finding: Finding) -> Error {
        let hint = finding.hint();
        Error::Store { location: self.location.clone(), operation, key: key.to_string(), source: finding.into(), hint }
    }

    fn endpoint(&self) -> String {
        self.options.endpoint.clone().unwrap_or_else(|| "AWS S3".to_string())
    }
}

/// An SDK error with its one-line description, for the retry log lines (its own Display says only
/// "service error" or "dispatch failure").
pub(super) struct Described<E> {
    pub(super) error: E,
    pub(super) text: String,
    /// A connection that could not be made to an endpoint that never answered (so it was not retried).
    pub(super) first_contact: bool,
}

impl<E> std::fmt::Display for Described<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Whether the request never left because no credentials could be found (the SDK reports this as a failure
/// to dispatch, like an unreachable endpoint): the credential chain's own error type, found among the causes.
fn is_missing_credentials<E: std::error::Error + 'static>(e: &SdkError<E, HttpResponse>) -> bool {
    use aws_credential_types::provider::error::CredentialsError;
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(inner) = cause {
        if let Some(credentials) = inner.downcast_ref::<CredentialsError>() {
            return matches!(
                credentials,
                CredentialsError::CredentialsNotLoaded(_) | CredentialsError::ProviderError(_)
            );
        }
        cause = inner.source();
    }
    false
}

/// Why a connection could not be made at all (refused, no such host, no route), when that is the failure:
/// the causes below the HTTP client's "connect" error, e.g. "tcp connect error: Connection refused (os error
/// 111)". A failure after connecting (a reset, a timeout waiting for the answer) is not one.
pub(super) fn connect_failure<E: std::error::Error + 'static>(e: &SdkError<E, HttpResponse>) -> Option<String> {
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
pub(super) fn is_transient<E: ProvideErrorMetadata + std::error::Error + 'static>(
    e: &SdkError<E, HttpResponse>,
) -> bool {
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
pub(super) fn describe<E>(e: &SdkError<E, HttpResponse>) -> String
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::S3Store;
    use crate::store::s3::S3Options;

    #[tokio::test]
    async fn a_finding_says_what_to_do_about_itself() {
        let store = S3Store::new(S3Options::from_url("s3://dr-test/site").unwrap()).await;
        let changed = store.inner.finding("read", "objects/a", Finding::ObjectChanged);
        assert_eq!(
            changed.to_string(),
            "repository s3://dr-test/site: read objects/a: the object changed while it was being read"
        );
        let hint = changed.hint().unwrap();
        assert!(hint.contains("replaced") && !hint.contains("free space"), "{hint}");
        // Read back through a stream, the store's own error keeps its hint.
        let io = std::io::Error::other(changed);
        let through_reader = crate::store::read_error("loc", "objects/a", io);
        assert_eq!(through_reader.hint().as_deref(), Some(hint.as_str()));
        let part = store.inner.finding("write", "objects/a", Finding::TooManyParts { part_size: 5 << 20 });
        let expected =
            format!("more than 10000 parts of {}: raise [repository] part_size", crate::units::bytes(5 << 20));
        assert!(part.to_string().ends_with(&expected), "{part}");
    }
}
