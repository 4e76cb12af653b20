//! Bandwidth limits: [`Throttled`], a store that wraps any other and paces the bytes it moves (`[repository]
//! limit_upload` and `limit_download`, or `--limit-upload` / `--limit-download`).
//!
//! What is counted is what the inner store is given and gives back: the repository's bytes, after compression
//! and encryption. Bodies are paced (`put`, a streaming writer's chunks, a reader's bytes); requests that move
//! no object data (`head`, `list`, `delete`, the leftovers of killed writers) are not. Each direction has one
//! [`TokenBucket`] for the whole process, so parallel transfers (a restore's three packs, `dr serve`'s jobs
//! and captures) share the limit rather than each getting it.
//!
//! Uploads to S3 are paced on the wire instead: the S3 store sends each request's body at the rate
//! ([`upload_bucket`], `store/s3/paced.rs`), since pacing the bytes handed to it would let every full part (or
//! pack) leave in one burst at the link's speed, which is what a limit at 3 a.m. is there to prevent.

mod bucket;
mod rate;

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::Sleep;

use super::{Leftovers, ObjectMeta, ObjectReader, ObjectWriter, Store};
use crate::error::Result;

pub use bucket::TokenBucket;
pub use rate::{Limits, Rate, check_rate};

/// A store whose object bodies move no faster than its buckets allow; everything else is the inner store's.
#[derive(Debug)]
pub struct Throttled {
    inner: Box<dyn Store>,
    upload: Option<Arc<TokenBucket>>,
    download: Option<Arc<TokenBucket>>,
}

impl Throttled {
    /// `inner`, paced by these buckets (`None`: that direction is not limited). [`limit`] gives a command's
    /// store the process's buckets; a test gives its own.
    pub fn new(inner: Box<dyn Store>, upload: Option<Arc<TokenBucket>>, download: Option<Arc<TokenBucket>>) -> Self {
        Throttled { inner, upload, download }
    }

    fn paced_writer(&self, writer: Box<dyn ObjectWriter>) -> Box<dyn ObjectWriter> {
        match &self.upload {
            Some(bucket) => Box::new(ThrottledWriter { inner: writer, bucket: bucket.clone() }),
            None => writer,
        }
    }
}

/// The process's upload bucket for `rate`: what an S3 store paces its request bodies with.
pub fn upload_bucket(rate: Rate) -> Arc<TokenBucket> {
    shared(&UPLOAD, rate, "uploads to")
}

/// `store` under `limits`, with the process's one bucket per direction; the store itself when unlimited.
pub fn limit(store: Box<dyn Store>, limits: &Limits) -> Box<dyn Store> {
    if limits.is_unlimited() {
        return store;
    }
    let upload = limits.upload.map(|rate| shared(&UPLOAD, rate, "uploads to"));
    let download = limits.download.map(|rate| shared(&DOWNLOAD, rate, "downloads from"));
    Box::new(Throttled::new(store, upload, download))
}

/// The limit is the process's total: every store opened in it (a command opens one; `dr serve` one per job,
/// capture and status refresh, some at once) takes its bytes from the same bucket.
static UPLOAD: Mutex<Option<Arc<TokenBucket>>> = Mutex::new(None);
static DOWNLOAD: Mutex<Option<Arc<TokenBucket>>> = Mutex::new(None);

fn shared(slot: &Mutex<Option<Arc<TokenBucket>>>, rate: Rate, what: &str) -> Arc<TokenBucket> {
    let mut slot = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    match slot.as_ref() {
        Some(bucket) if bucket.rate() == rate => bucket.clone(),
        Some(bucket) => {
            // A reloaded configuration: transfers under way slow down or speed up with the next bytes.
            tracing::info!("bandwidth limit: {what} the repository now at most {rate}");
            bucket.set_rate(rate);
            bucket.clone()
        }
        None => {
            tracing::info!("bandwidth limit: {what} the repository at most {rate}");
            slot.insert(Arc::new(TokenBucket::new(rate))).clone()
        }
    }
}

#[async_trait]
impl Store for Throttled {
    fn location(&self) -> &str {
        self.inner.location()
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        if let Some(bucket) = &self.upload {
            bucket.take(data.len() as u64).await;
        }
        self.inner.put(key, data).await
    }

    async fn put_stream(&self, key: &str) -> Result<Box<dyn ObjectWriter>> {
        Ok(self.paced_writer(self.inner.put_stream(key).await?))
    }

    async fn put_stream_sized(&self, key: &str, size_hint: u64) -> Result<Box<dyn ObjectWriter>> {
        Ok(self.paced_writer(self.inner.put_stream_sized(key, size_hint).await?))
    }

    async fn get(&self, key: &str) -> Result<ObjectReader> {
        let reader = self.inner.get(key).await?;
        Ok(match &self.download {
            Some(bucket) => Box::pin(ThrottledReader { inner: reader, bucket: bucket.clone(), wait: None }),
            None => reader,
        })
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        self.inner.head(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.inner.list(prefix).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await
    }

    async fn check_access(&self) -> Result<()> {
        self.inner.check_access().await
    }

    fn leftovers(&self) -> Option<&dyn Leftovers> {
        self.inner.leftovers()
    }
}

/// A streaming upload whose chunks wait for the bucket before the inner writer gets them.
struct ThrottledWriter {
    inner: Box<dyn ObjectWriter>,
    bucket: Arc<TokenBucket>,
}

#[async_trait]
impl ObjectWriter for ThrottledWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.bucket.take(chunk.len() as u64).await;
        self.inner.write(chunk).await
    }

    async fn finish(self: Box<Self>) -> Result<()> {
        self.inner.finish().await
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        self.inner.abort().await
    }
}

/// A download that pays for each read after it (a read's size is known only then) by waiting before the next.
/// A read takes at most one slice of the rate, so that the waits stay short and even.
struct ThrottledReader {
    inner: ObjectReader,
    bucket: Arc<TokenBucket>,
    wait: Option<Pin<Box<Sleep>>>,
}

impl AsyncRead for ThrottledReader {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if let Some(wait) = self.wait.as_mut() {
            ready!(wait.as_mut().poll(cx));
            self.wait = None;
        }
        let most = (self.bucket.rate().slice() as usize).min(buf.remaining());
        // An initialized window of the caller's buffer (free when the caller passed a slice, as read() does),
        // so that the read is capped without unsafe code.
        let window = buf.initialize_unfilled_to(most);
        let mut limited = ReadBuf::new(window);
        ready!(self.inner.as_mut().poll_read(cx, &mut limited))?;
        let read = limited.filled().len();
        buf.advance(read);
        if read == 0 {
            return Poll::Ready(Ok(())); // the end: nothing to pay for, and nothing after it to wait for
        }
        if let Some(deadline) = self.bucket.reserve(read as u64) {
            self.wait = Some(Box::pin(tokio::time::sleep_until(deadline)));
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncReadExt;
    use tokio::time::Instant;

    use super::*;
    use crate::store::MemoryStore;

    const MIB: u64 = 1 << 20;

    fn bucket(bytes_per_second: u64) -> Arc<TokenBucket> {
        Arc::new(TokenBucket::new(Rate::from_bytes_per_second(bytes_per_second).unwrap()))
    }

    /// Real time: the lower bound (never faster than the limit, less its 50 ms burst) is what matters; the
    /// upper one only catches a wait that never ends.
    fn assert_took_at_least(started: Instant, at_least: Duration) {
        let elapsed = started.elapsed();
        assert!(elapsed >= at_least - Duration::from_millis(55), "took {elapsed:?}, at least {at_least:?}");
        assert!(elapsed < at_least + Duration::from_secs(2), "took {elapsed:?}, about {at_least:?}");
    }

    #[tokio::test]
    async fn puts_writers_and_readers_are_paced() {
        let store = Throttled::new(Box::new(MemoryStore::new()), Some(bucket(8 * MIB)), Some(bucket(16 * MIB)));
        let started = Instant::now();
        store.put("a", Bytes::from(vec![1u8; MIB as usize])).await.unwrap();
        let mut writer = store.put_stream_sized("b", MIB).await.unwrap();
        for _ in 0..4 {
            writer.write(Bytes::from(vec![2u8; (MIB / 4) as usize])).await.unwrap();
        }
        writer.finish().await.unwrap();
        assert_took_at_least(started, Duration::from_millis(250)); // 2 MiB at 8 MiB/s

        let started = Instant::now();
        let mut data = Vec::new();
        store.get("a").await.unwrap().read_to_end(&mut data).await.unwrap();
        let mut small = [0u8; 1000];
        let mut reader = store.get("b").await.unwrap();
        while reader.read(&mut small).await.unwrap() > 0 {}
        assert_eq!(data.len() as u64, MIB);
        assert_took_at_least(started, Duration::from_millis(125)); // 2 MiB at 16 MiB/s
    }

    #[tokio::test]
    async fn metadata_requests_do_not_wait_for_the_bucket() {
        let memory = MemoryStore::new();
        memory.put("a", Bytes::from_static(b"data")).await.unwrap();
        let upload = bucket(MIB);
        let download = bucket(MIB);
        // Other transfers have taken the next 10 s of both directions.
        upload.reserve(10 * MIB);
        download.reserve(10 * MIB);
        let store = Throttled::new(Box::new(memory), Some(upload), Some(download));
        let started = Instant::now();
        assert_eq!(store.list("").await.unwrap().len(), 1);
        assert!(store.head("a").await.unwrap().is_some());
        store.check_access().await.unwrap();
        store.delete("a").await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
        assert!(store.leftovers().is_none(), "the memory store's (none) are forwarded");
        assert_eq!(store.location(), "memory");
    }

    #[tokio::test]
    async fn an_unlimited_direction_is_not_paced() {
        let store = Throttled::new(Box::new(MemoryStore::new()), Some(bucket(MIB)), None);
        store.put("a", Bytes::from(vec![1u8; 1000])).await.unwrap();
        store.inner.put("b", Bytes::from(vec![1u8; 4 * MIB as usize])).await.unwrap();
        let started = Instant::now();
        let mut data = Vec::new();
        store.get("b").await.unwrap().read_to_end(&mut data).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    }

    #[test]
    fn no_limit_is_no_wrapper_and_a_limit_is_the_process_bucket() {
        let store = limit(Box::new(MemoryStore::new()), &Limits::default());
        assert!(format!("{store:?}").starts_with("MemoryStore"), "{store:?}");

        let rate = Rate::from_bytes_per_second(3 * MIB).unwrap();
        let store = limit(Box::new(MemoryStore::new()), &Limits { upload: None, download: Some(rate) });
        assert!(format!("{store:?}").starts_with("Throttled"), "{store:?}");
        let first = shared(&DOWNLOAD, rate, "downloads from");
        assert!(Arc::ptr_eq(&first, &shared(&DOWNLOAD, rate, "downloads from")), "one bucket per process");
        let faster = Rate::from_bytes_per_second(6 * MIB).unwrap();
        let reloaded = shared(&DOWNLOAD, faster, "downloads from");
        assert!(Arc::ptr_eq(&first, &reloaded), "a new rate changes the bucket in place");
        assert_eq!(first.rate(), faster);
    }
}
