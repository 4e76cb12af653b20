//! Backup direction: bytes written to an [`EncodeWriter`] end up as one encrypted object in the store.
//!
//! Two [`Encoding`]s: a stream of plaintext (a dump, a tar stream) is compressed and encrypted; a pack of chunks
//! (`chunks::pack`) holds zstd frames already, so it is only encrypted: a second zstd pass would cost CPU and
//! save nothing.

use std::io::{self, Write};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;

use super::{CHANNEL_CHUNKS, CHUNK_SIZE, Compression, Sealed, Tally};
use crate::crypto::Recipients;
use crate::error::{Error, Result};
use crate::progress::ProgressTask;
use crate::store::{ObjectWriter, Store};

/// Bytes per zstd worker job in multithreaded mode.
const JOB_SIZE: u32 = 1 << 20;

/// Messages from the encoding thread to the task that owns the store writer.
enum Feed {
    Data(Bytes),
    /// The stream ended cleanly: make the object visible. Without it, the object is aborted.
    Commit,
}

/// What the encoder does to the bytes before they are hashed and stored.
#[derive(Debug, Clone, Copy)]
pub enum Encoding {
    /// zstd, then age: for plaintext streams.
    Compressed(Compression),
    /// age only: for bytes compressed already (the zstd frames of a pack).
    Encrypted,
}

type Encrypted = age::stream::StreamWriter<TallyWriter<ChunkSink>>;

/// The layers above the tally, by [`Encoding`].
enum Layers {
    Compressed(zstd::stream::write::Encoder<'static, Encrypted>),
    Encrypted(Encrypted),
}

impl Layers {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Layers::Compressed(encoder) => encoder.write(buf),
            Layers::Encrypted(encrypted) => encrypted.write(buf),
        }
    }

    /// Ends the zstd frame (if any) and the age stream.
    fn finish(self) -> io::Result<TallyWriter<ChunkSink>> {
        match self {
            Layers::Compressed(encoder) => encoder.finish()?.finish(),
            Layers::Encrypted(encrypted) => encrypted.finish(),
        }
    }
}

/// A `Write` that compresses (by its [`Encoding`]), encrypts and hashes, and hands full chunks to the store.
/// [`EncodeWriter::finish`] is mandatory: without it the object is aborted, never committed.
pub struct EncodeWriter {
    layers: Layers,
    tally: Tally,
    plain_size: u64,
    progress: Arc<dyn ProgressTask>,
}

impl std::fmt::Debug for EncodeWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncodeWriter").field("plain_size", &self.plain_size).finish()
    }
}

impl EncodeWriter {
    fn new(
        recipients: &Recipients,
        encoding: Encoding,
        sender: mpsc::Sender<Feed>,
        progress: Arc<dyn ProgressTask>,
    ) -> io::Result<EncodeWriter> {
        let tally = Tally::default();
        let sink = TallyWriter {
            inner: ChunkSink { buffer: BytesMut::with_capacity(CHUNK_SIZE), sender },
            tally: tally.clone(),
        };
        let encrypted = recipients.encrypt(sink)?;
        let layers = match encoding {
            Encoding::Compressed(compression) => Layers::Compressed(compressor(encrypted, compression)?),
            Encoding::Encrypted => Layers::Encrypted(encrypted),
        };
        Ok(EncodeWriter { layers, tally, plain_size: 0, progress })
    }

    /// Bytes written so far, before compression.
    pub fn plain_size(&self) -> u64 {
        self.plain_size
    }

    /// Ends the zstd frame and the age stream and queues the commit.
    pub fn finish(self) -> io::Result<Sealed> {
        let sink = self.layers.finish()?;
        let (stored_size, sha256) = self.tally.finish();
        sink.inner.commit()?;
        Ok(Sealed { stored_size, sha256, plain_size: self.plain_size })
    }
}

/// The zstd layer of [`Encoding::Compressed`].
fn compressor(
    encrypted: Encrypted,
    compression: Compression,
) -> io::Result<zstd::stream::write::Encoder<'static, Encrypted>> {
    let mut encoder = zstd::stream::write::Encoder::new(encrypted, compression.level)?;
    encoder.include_checksum(true)?;
    let threads = compression.worker_threads();
    if threads > 1 {
        encoder.multithread(threads)?;
        // zstd's default jobs are several windows long and it keeps several jobs' input and output per
        // worker: 45-60 MiB with two workers. 1 MiB jobs keep the whole backup near 27 MiB, measured at no
        // cost in speed and under 0.01 % in size (docs/benchmarks.md).
        encoder.set_parameter(zstd::stream::raw::CParameter::JobSize(JOB_SIZE))?;
    }
    Ok(encoder)
}

impl Write for EncodeWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.layers.write(buf)?;
        self.plain_size += n as u64;
        self.progress.advance(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Flushing zstd mid-stream would only cost ratio; chunks move on their own when full.
        Ok(())
    }
}

struct TallyWriter<W> {
    inner: W,
    tally: Tally,
}

impl<W: Write> Write for TallyWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.tally.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Collects bytes into [`CHUNK_SIZE`] pieces and sends them, blocking when the channel is full: this is the
/// backpressure that keeps a fast source from outrunning a slow store.
struct ChunkSink {
    buffer: BytesMut,
    sender: mpsc::Sender<Feed>,
}

impl ChunkSink {
    fn send(&self, feed: Feed) -> io::Result<()> {
        self.sender
            .blocking_send(feed)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the store stopped accepting data"))
    }

    fn commit(mut self) -> io::Result<()> {
        if !self.buffer.is_empty() {
            let rest = self.buffer.split().freeze();
            self.send(Feed::Data(rest))?;
        }
        self.send(Feed::Commit)
    }
}

impl Write for ChunkSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = CHUNK_SIZE - self.buffer.len();
        let n = buf.len().min(room);
        self.buffer.extend_from_slice(&buf[..n]);
        if self.buffer.len() == CHUNK_SIZE {
            let chunk = self.buffer.split().freeze();
            self.buffer.reserve(CHUNK_SIZE);
            self.send(Feed::Data(chunk))?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// How the store side of an upload ended when the store itself did not fail. A crate-internal signal, not an
/// [`Error`]: an abandoned object is the producer's failure, and the producer reports it itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Uploaded {
    /// The object is committed.
    Committed,
    /// The producer stopped without committing; the object was aborted.
    Abandoned,
}

/// Receives chunks and writes them to the store; commits only on [`Feed::Commit`].
async fn drive(mut writer: Box<dyn ObjectWriter>, mut receiver: mpsc::Receiver<Feed>) -> Result<Uploaded> {
    loop {
        match receiver.recv().await {
            Some(Feed::Data(chunk)) => {
                if let Err(e) = writer.write(chunk).await {
                    // Close the channel first so the encoder stops at its next send.
                    drop(receiver);
                    let _ = writer.abort().await;
                    return Err(e);
                }
            }
            Some(Feed::Commit) => return writer.finish().await.map(|()| Uploaded::Committed),
            None => {
                // The producer stopped without committing: it failed, and says why itself.
                writer.abort().await?;
                return Ok(Uploaded::Abandoned);
            }
        }
    }
}

/// An upload in progress: the store side, running as its own task. Dropping the handle (the backup was
/// cancelled or failed elsewhere) aborts the task, which aborts the object and stops the encoder's sends.
#[derive(Debug)]
pub struct UploadHandle {
    task: AbortOnDropHandle<Result<Uploaded>>,
    key: String,
}

impl UploadHandle {
    /// Waits for the store side: [`Uploaded::Committed`] once the object is committed (after
    /// [`EncodeWriter::finish`]), [`Uploaded::Abandoned`] when the writer was dropped unfinished.
    pub(crate) async fn wait(self) -> Result<Uploaded> {
        self.task.await.map_err(|e| Error::io(format!("uploading {}", self.key), io::Error::other(e)))?
    }

    /// True once the store side ended (committed, abandoned or failed): [`UploadHandle::wait`] would not wait.
    pub(crate) fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// The key being uploaded.
    pub fn key(&self) -> &str {
        &self.key
    }
}

/// Starts one object upload: write the plaintext into the returned writer (on a blocking thread), call
/// [`EncodeWriter::finish`], then [`UploadHandle::wait`]. Dropping the writer unfinished aborts the object.
pub async fn begin_upload(
    store: &dyn Store,
    key: &str,
    recipients: &Recipients,
    compression: Compression,
    progress: Arc<dyn ProgressTask>,
) -> Result<(EncodeWriter, UploadHandle)> {
    begin_encoded_upload(store, key, recipients, Encoding::Compressed(compression), None, progress).await
}

/// [`begin_upload`] with the [`Encoding`] chosen: [`Encoding::Encrypted`] for bytes that are compressed already;
/// with `size_hint`, the stored size the caller expects at most ([`Store::put_stream_sized`]).
pub async fn begin_encoded_upload(
    store: &dyn Store,
    key: &str,
    recipients: &Recipients,
    encoding: Encoding,
    size_hint: Option<u64>,
    progress: Arc<dyn ProgressTask>,
) -> Result<(EncodeWriter, UploadHandle)> {
    let writer = match size_hint {
        Some(size) => store.put_stream_sized(key, size).await?,
        None => store.put_stream(key).await?,
    };
    let (sender, receiver) = mpsc::channel(CHANNEL_CHUNKS);
    let task = AbortOnDropHandle::new(tokio::spawn(drive(writer, receiver)));
    let encoder = EncodeWriter::new(recipients, encoding, sender, progress)
        .map_err(|e| crate::store::store_error(store.location(), "write", key, e))?;
    Ok((encoder, UploadHandle { task, key: key.to_string() }))
}

/// Combines a producer's outcome with its uploads' outcomes into the root cause: a store failure first (the
/// producer then only saw a broken pipe), the producer's own failure otherwise.
pub async fn settle<T>(produced: Result<T>, uploads: Vec<UploadHandle>) -> Result<T> {
    let mut store_failure = None;
    for upload in uploads {
        // An abandoned upload is no failure of its own: the producer stopped, and `produced` says why.
        if let Err(e) = upload.wait().await {
            store_failure.get_or_insert(e);
        }
    }
    match (produced, store_failure) {
        (_, Some(store_error)) => Err(store_error),
        (produced, None) => produced,
    }
}

/// Streams one object into the store: `produce` runs on a blocking thread and writes the plaintext.
/// The object is committed only when `produce` returned `Ok` and every byte reached the store.
pub async fn upload<T, F>(
    store: &dyn Store,
    key: &str,
    recipients: &Recipients,
    compression: Compression,
    progress: Arc<dyn ProgressTask>,
    produce: F,
) -> Result<(T, Sealed)>
where
    T: Send + 'static,
    F: FnOnce(&mut EncodeWriter) -> Result<T> + Send + 'static,
{
    let (mut writer, handle) = begin_upload(store, key, recipients, compression, progress).await?;
    let location = store.location().to_string();
    let key_owned = key.to_string();
    let produced = tokio::task::spawn_blocking(move || {
        let value = produce(&mut writer)?;
        let sealed = writer.finish().map_err(|e| crate::store::store_error(&location, "write", &key_owned, e))?;
        Ok((value, sealed))
    })
    .await
    .map_err(|e| Error::io(format!("encoding {key}"), io::Error::other(e)))
    .and_then(|r| r);
    settle(produced, vec![handle]).await
}
