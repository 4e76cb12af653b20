//! Restore direction: an object in the store read back as plaintext, checked against its manifest entry.

use std::io::{self, BufReader, Read};
use std::sync::Arc;

use super::read_ahead::ReadAhead;
use super::{Sealed, Tally};
use crate::crypto::{DecryptFailure, Identities};
use crate::error::{Error, Result};
use crate::progress::ProgressTask;
use crate::store::Store;

type Source = Box<dyn Read + Send>;

/// A `Read` of an object's plaintext. Read errors are remembered and classified: a failure of the store is a
/// store error, a failure of age or zstd means the object is corrupt.
///
/// age detects a flipped or truncated byte as it reads; the SHA-256 and sizes recorded in the manifest also
/// catch a whole object swapped for another. The last [`HOLD_BACK`] bytes of plaintext are released only after
/// those end-of-stream checks passed, so a consumer (pg_restore, tar) can never complete on a bad object: it
/// sees an error instead of the end of its input.
pub struct DecodeReader {
    /// zstd on this thread; age, the hash and the store's reads on the read-ahead's.
    decoder: zstd::stream::read::Decoder<'static, BufReader<ReadAhead>>,
    tally: Tally,
    key: String,
    location: String,
    expected: Sealed,
    plain_size: u64,
    progress: Arc<dyn ProgressTask>,
    failure: Option<Error>,
    held: Vec<u8>,
    held_start: usize,
    verified: Option<Sealed>,
}

/// Plaintext withheld from the consumer until the object checked out.
const HOLD_BACK: usize = 128 << 10;
const READ_SIZE: usize = 128 << 10;

impl std::fmt::Debug for DecodeReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodeReader").field("key", &self.key).finish()
    }
}

/// Opens the decoding layers over `source`, the raw bytes of object `key`.
pub fn open_decoder(
    source: Source,
    key: &str,
    location: &str,
    identities: &Identities,
    expected: Sealed,
    progress: Arc<dyn ProgressTask>,
) -> Result<DecodeReader> {
    let tally = Tally::default();
    let raw = BufReader::with_capacity(256 << 10, TallyReader { inner: source, tally: tally.clone() });
    let decrypted = match identities.decrypt(raw) {
        Ok(reader) => reader,
        Err(failure) => {
            if let Some(source) = tally.take_source_error() {
                return Err(store_read_error(location, key, source));
            }
            return Err(header_error(failure, key));
        }
    };
    let decrypted = ReadAhead::new(AgeLayer(decrypted)).map_err(|e| Error::io(format!("starting to read {key}"), e))?;
    let decoder =
        zstd::stream::read::Decoder::new(decrypted).map_err(|e| Error::io(format!("starting zstd for {key}"), e))?;
    Ok(DecodeReader {
        decoder,
        tally,
        key: key.to_string(),
        location: location.to_string(),
        expected,
        plain_size: 0,
        progress,
        failure: None,
        held: Vec::with_capacity(HOLD_BACK + READ_SIZE),
        held_start: 0,
        verified: None,
    })
}

impl DecodeReader {
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The classified error behind a failed read, if a read failed. Consumers that saw only an `io::Error`
    /// (tar, a child's pipe) ask this for the real cause.
    pub fn take_failure(&mut self) -> Option<Error> {
        self.failure.take()
    }

    /// Reads whatever the consumer left and returns the checked facts of the object.
    pub fn finish(mut self) -> Result<Sealed> {
        if let Err(e) = io::copy(&mut self, &mut io::sink()) {
            return Err(self.failure.take().unwrap_or_else(|| classify(&self.tally, &self.location, &self.key, &e)));
        }
        self.verified.ok_or_else(|| Error::io("decoding", io::Error::other("stream ended unverified")))
    }

    /// The end-of-stream checks: every stored byte counted and hashed, the plaintext fully produced.
    fn check_end(&self) -> Result<Sealed> {
        let corrupt = |reason: String| Error::ObjectCorrupt { key: self.key.clone(), reason };
        let (stored_size, sha256) = self.tally.finish();
        if stored_size != self.expected.stored_size {
            return Err(corrupt(format!(
                "it holds {stored_size} bytes, the manifest says {}",
                self.expected.stored_size
            )));
        }
        if sha256 != self.expected.sha256 {
            return Err(corrupt(format!("SHA-256 is {sha256}, the manifest says {}", self.expected.sha256)));
        }
        if self.plain_size != self.expected.plain_size {
            return Err(corrupt(format!(
                "it decompresses to {} bytes, the manifest says {}",
                self.plain_size, self.expected.plain_size
            )));
        }
        Ok(Sealed { stored_size, sha256, plain_size: self.plain_size })
    }

    fn fail(&mut self, error: Error, kind: io::ErrorKind) -> io::Error {
        let message = error.to_string();
        self.failure.get_or_insert(error);
        io::Error::new(kind, message)
    }

    /// Reads the next piece of plaintext into the hold-back buffer; at the end, runs the checks.
    fn fill(&mut self) -> io::Result<()> {
        if self.held_start > 0 {
            self.held.drain(..self.held_start);
            self.held_start = 0;
        }
        let old = self.held.len();
        self.held.resize(old + READ_SIZE, 0);
        let result = self.decoder.read(&mut self.held[old..]);
        let n = *result.as_ref().unwrap_or(&0);
        self.held.truncate(old + n);
        match result {
            Ok(0) => match self.check_end() {
                Ok(sealed) => {
                    self.verified = Some(sealed);
                    Ok(())
                }
                Err(error) => Err(self.fail(error, io::ErrorKind::InvalidData)),
            },
            Ok(n) => {
                self.plain_size += n as u64;
                self.progress.advance(n as u64);
                Ok(())
            }
            Err(e) => {
                let error = classify(&self.tally, &self.location, &self.key, &e);
                Err(self.fail(error, e.kind()))
            }
        }
    }
}

impl Read for DecodeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let available = self.held.len() - self.held_start;
            let releasable = if self.verified.is_some() { available } else { available.saturating_sub(HOLD_BACK) };
            if releasable > 0 || self.verified.is_some() {
                let n = releasable.min(buf.len());
                buf[..n].copy_from_slice(&self.held[self.held_start..self.held_start + n]);
                self.held_start += n;
                return Ok(n);
            }
            if let Some(error) = &self.failure {
                return Err(io::Error::other(error.to_string()));
            }
            self.fill()?;
        }
    }
}

/// Why an object's age header would not open, as a user-facing error.
///
/// An object is read only after its snapshot's manifest opened with the same identity, and a backup encrypts
/// the manifest and the objects to the same recipients. So an object that this identity cannot open was
/// altered (one changed byte in a recipient stanza is enough) or replaced: corruption, not the wrong key.
fn header_error(failure: DecryptFailure, key: &str) -> Error {
    let reason = match failure {
        DecryptFailure::WrongIdentity => "its age header has no recipient this identity can open, although the \
                                          snapshot's manifest opened with it: the header was altered or the object \
                                          replaced"
            .to_string(),
        DecryptFailure::Corrupt(message) => {
            format!("its age header is damaged ({})", message.lines().next().unwrap_or_default().trim_end_matches('.'))
        }
    };
    Error::ObjectCorrupt { key: key.to_string(), reason }
}

fn classify(tally: &Tally, location: &str, key: &str, e: &io::Error) -> Error {
    match tally.take_source_error() {
        Some(source) => store_read_error(location, key, source),
        None => Error::ObjectCorrupt { key: key.to_string(), reason: explain(e) },
    }
}

/// The store failed under the decoder: its own error when its reader passed one through (it knows what happened
/// and what to do about it), a store read error quoting the I/O error otherwise.
fn store_read_error(location: &str, key: &str, e: io::Error) -> Error {
    match e.downcast::<Error>() {
        Ok(error) => error,
        Err(e) => crate::store::read_error(location, key, e),
    }
}

/// A failure of the age layer (as opposed to zstd above it), told apart by type rather than by age's words.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct AgeFailure(io::Error);

/// The age stream reader, marking its errors as [`AgeFailure`]s.
struct AgeLayer<R>(R);

impl<R: Read> Read for AgeLayer<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(|e| io::Error::new(e.kind(), AgeFailure(e)))
    }
}

/// age and zstd report damage tersely; say what it means. age authenticates every chunk, so invalid data out
/// of it means altered or cut bytes; anything else did not decompress.
fn explain(e: &io::Error) -> String {
    let message = e.to_string();
    let from_age = e.get_ref().is_some_and(|inner| inner.is::<AgeFailure>());
    if e.kind() == io::ErrorKind::UnexpectedEof {
        format!("it ends early ({message})")
    } else if from_age && e.kind() == io::ErrorKind::InvalidData {
        "it fails age authentication: bytes were altered or the object is truncated".to_string()
    } else {
        format!("it does not decode ({message})")
    }
}

struct TallyReader {
    inner: Source,
    tally: Tally,
}

impl Read for TallyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.tally.update(&buf[..n]);
                Ok(n)
            }
            Err(e) => Err(self.tally.record_source_error(e)),
        }
    }
}

/// Streams one object out of the store: `consume` runs on a blocking thread and reads the plaintext.
///
/// Succeeds only when `consume` succeeded and the whole object checked out against `expected`. When the
/// consumer failed because the object was bad, the object's error is returned, not the consumer's echo of it.
pub async fn download<T, F>(
    store: &dyn Store,
    key: &str,
    identities: Arc<Identities>,
    expected: Sealed,
    progress: Arc<dyn ProgressTask>,
    consume: F,
) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(&mut DecodeReader) -> Result<T> + Send + 'static,
{
    let reader = store.get(key).await?;
    let location = store.location().to_string();
    let key = key.to_string();
    tokio::task::spawn_blocking(move || {
        let source: Source = Box::new(tokio_util::io::SyncIoBridge::new(reader));
        let mut decoder = open_decoder(source, &key, &location, &identities, expected, progress)?;
        let value = match consume(&mut decoder) {
            Ok(value) => value,
            Err(e) => return Err(decoder.take_failure().unwrap_or(e)),
        };
        decoder.finish()?;
        Ok(value)
    })
    .await
    .map_err(|e| Error::io("decoding", io::Error::other(e)))?
}
