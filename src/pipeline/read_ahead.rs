//! A `Read` that reads its source on a thread of its own, a few chunks ahead of the consumer.
//!
//! Restoring decrypts (and hashes) and decompresses; on one thread those add up, while the equivalent shell
//! pipeline `age -d | zstd -d` runs them on two cores. Putting the decryption side on its own thread gives dr
//! the same overlap, with memory bounded by [`CHUNKS`] x [`CHUNK`].

use std::io::{self, Read};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

/// Bytes per chunk handed over.
const CHUNK: usize = 256 << 10;
/// Chunks read ahead of the consumer.
const CHUNKS: usize = 4;

pub struct ReadAhead {
    receiver: Receiver<io::Result<Vec<u8>>>,
    current: Vec<u8>,
    position: usize,
    done: bool,
}

impl std::fmt::Debug for ReadAhead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadAhead").field("done", &self.done).finish()
    }
}

impl ReadAhead {
    /// Starts reading `source` on a new thread. Dropping the `ReadAhead` stops the thread at its next chunk.
    pub fn new<R: Read + Send + 'static>(source: R) -> io::Result<ReadAhead> {
        let (sender, receiver) = sync_channel(CHUNKS);
        std::thread::Builder::new().name("dr-read-ahead".to_string()).spawn(move || pump(source, &sender))?;
        Ok(ReadAhead { receiver, current: Vec::new(), position: 0, done: false })
    }
}

/// Sends the source's bytes in chunks, then an empty chunk for the end, or the error that stopped it.
fn pump<R: Read>(mut source: R, sender: &SyncSender<io::Result<Vec<u8>>>) {
    loop {
        let mut chunk = vec![0; CHUNK];
        let mut filled = 0;
        // Fill whole chunks (sources return short reads), but hand over what there is at the end.
        let result = loop {
            match source.read(&mut chunk[filled..]) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    filled += n;
                    if filled == CHUNK {
                        break Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        chunk.truncate(filled);
        let end = filled < CHUNK;
        let message = match result {
            Err(e) if filled == 0 => Err(e),
            Err(e) => {
                // Deliver what was read before the error, then the error.
                if sender.send(Ok(chunk)).is_err() {
                    return;
                }
                Err(e)
            }
            Ok(()) => Ok(chunk),
        };
        let failed = message.is_err();
        if sender.send(message).is_err() || failed {
            return;
        }
        if end {
            // A short chunk is the end; make sure the consumer sees an empty one after it.
            let _ = sender.send(Ok(Vec::new()));
            return;
        }
    }
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.position == self.current.len() {
            if self.done {
                return Ok(0);
            }
            match self.receiver.recv() {
                Ok(Ok(chunk)) if chunk.is_empty() => self.done = true,
                Ok(Ok(chunk)) => {
                    self.current = chunk;
                    self.position = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(io::Error::other("the read-ahead thread stopped")),
            }
        }
        let n = buf.len().min(self.current.len() - self.position);
        buf[..n].copy_from_slice(&self.current[self.position..self.position + n]);
        self.position += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_arrives_in_order() {
        for size in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK + 17] {
            let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
            let mut out = Vec::new();
            ReadAhead::new(io::Cursor::new(data.clone())).unwrap().read_to_end(&mut out).unwrap();
            assert_eq!(out, data, "{size} bytes");
        }
    }

    #[test]
    fn an_error_arrives_after_the_bytes_before_it() {
        let failing = io::Cursor::new(vec![1u8; 1000]).chain(FailingReader);
        let mut reader = ReadAhead::new(failing).unwrap();
        let mut out = vec![0; 1000];
        reader.read_exact(&mut out).unwrap();
        assert_eq!(out, vec![1u8; 1000]);
        let e = reader.read(&mut [0; 10]).unwrap_err();
        assert_eq!(e.to_string(), "broken");
    }

    struct FailingReader;

    impl Read for FailingReader {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("broken"))
        }
    }
}
