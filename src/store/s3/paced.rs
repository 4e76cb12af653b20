//! Request bodies paced on the wire: with an upload limit, the bytes of a PutObject or UploadPart leave at the
//! limit's rate while the request is being sent, not in one burst at the link's speed once a part is full.
//!
//! The body yields its bytes in slices of [`SLICE`], each after the process's upload bucket allows it. A retried
//! request sends its bytes again, and pays for them again: they cross the link again.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use aws_sdk_s3::primitives::{ByteStream, SdkBody};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use crate::store::throttle::TokenBucket;

/// Bytes per frame: small enough that a slow rate still sends every few milliseconds.
const SLICE: usize = 64 << 10;

/// The body of one upload request: `data`, unpaced without a bucket.
pub(super) fn body(data: Bytes, pacer: Option<&Arc<TokenBucket>>) -> ByteStream {
    match pacer {
        None => ByteStream::from(data),
        Some(pacer) => {
            let pacer = pacer.clone();
            ByteStream::new(SdkBody::retryable(move || {
                SdkBody::from_body_1_x(Paced { data: data.clone(), at: 0, pacer: pacer.clone(), wait: None })
            }))
        }
    }
}

struct Paced {
    data: Bytes,
    /// Bytes handed to the connection so far.
    at: usize,
    pacer: Arc<TokenBucket>,
    /// The next slice, waiting for its moment.
    wait: Option<(Pin<Box<Sleep>>, Bytes)>,
}

impl Body for Paced {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some((sleep, _)) = self.wait.as_mut() {
            ready!(sleep.as_mut().poll(cx));
            let slice = self.wait.take().map(|(_, slice)| slice).unwrap_or_default();
            return Poll::Ready(Some(Ok(Frame::data(slice))));
        }
        if self.at == self.data.len() {
            return Poll::Ready(None);
        }
        let end = (self.at + SLICE).min(self.data.len());
        let slice = self.data.slice(self.at..end);
        self.at = end;
        match self.pacer.reserve(slice.len() as u64) {
            None => Poll::Ready(Some(Ok(Frame::data(slice)))),
            Some(moment) => {
                let mut sleep = Box::pin(tokio::time::sleep_until(moment));
                // Registers the waker; a moment already past is ready at once.
                if sleep.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Ok(Frame::data(slice))));
                }
                self.wait = Some((sleep, slice));
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.at == self.data.len() && self.wait.is_none()
    }

    /// Exact: S3 needs the Content-Length up front.
    fn size_hint(&self) -> SizeHint {
        let waiting = self.wait.as_ref().map_or(0, |(_, slice)| slice.len());
        SizeHint::with_exact((self.data.len() - self.at + waiting) as u64)
    }
}
