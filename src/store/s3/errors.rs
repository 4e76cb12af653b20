//! S3 failures as dr's errors: which are worth another attempt, and what each final one means to the user.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use super::Inner;
use crate::error::Error;

impl Inner {
    /// dr's error for a request's final failure; `retried`: whether the retry policy applied to it.
    pub(super) fn error<E>(
        &self,
        operation: &'static str,
        key: &str,
        e: &SdkError<E, HttpResponse>,
        retried: bool,
    ) -> Error
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
