//! Downloads: streamed from a background task, resumed after a broken connection with a ranged GET.

use std::sync::Arc;

use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::Inner;
use super::errors::Finding;
use crate::error::Result;

/// Downloaded pieces in flight between the download task and the reader.
pub(super) const DOWNLOAD_CHANNEL: usize = 16;

impl Inner {
    /// A GET from `offset`, checking that the object is still the one the download started on.
    pub(super) async fn get_from(&self, full: &str, key: &str, offset: u64, etag: Option<&str>) -> Result<GetResponse> {
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
            return Err(self.finding("read", key, Finding::ObjectChanged));
        }
        Ok(GetResponse { body: response.body, etag: this_etag })
    }
}

pub(super) struct GetResponse {
    pub(super) body: ByteStream,
    pub(super) etag: Option<String>,
}

/// The reader of a download whose first response is `first`: the bytes come from a background [`download`].
pub(super) fn stream(inner: Arc<Inner>, key: String, full: String, first: GetResponse) -> crate::store::ObjectReader {
    let (sender, mut receiver) = mpsc::channel(DOWNLOAD_CHANNEL);
    tokio::spawn(download(inner, key, full, first, sender));
    let stream = futures::stream::poll_fn(move |cx| receiver.poll_recv(cx));
    Box::pin(tokio_util::io::StreamReader::new(stream))
}

/// Feeds one object's bytes to the reader, resuming from the last byte received when the connection breaks.
pub(super) async fn download(
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
                tokio::time::sleep(inner.options.retry.backoff(resumes)).await;
                match inner.get_from(&full, &key, offset, etag.as_deref()).await {
                    Ok(next) => body = next.body,
                    Err(e) => {
                        let _ = sender.send(Err(std::io::Error::other(e))).await;
                        return;
                    }
                }
            }
        }
    }
}
